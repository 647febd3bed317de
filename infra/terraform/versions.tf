terraform {
  required_version = ">= 1.6"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = "~> 6.20"
    }
    random = {
      source  = "hashicorp/random"
      version = "~> 3.6"
    }
  }

  # State holds the generated database password: keep it in a private, versioned bucket, e.g.
  #   terraform init -backend-config="bucket=<state-bucket>" -backend-config="prefix=ptdistill"
  backend "gcs" {}
}

provider "google" {
  project = var.project_id
  region  = var.region
}
