locals {
  bucket_name = var.bucket_name != "" ? var.bucket_name : "${var.project_id}-${var.name}"
}

# One bucket:  runs/    KFP pipeline root        (ptdistill submit --pipeline-root gs://B/runs)
#              cache/   teacher cache            (ptdistill submit --artifact-store gs://B)
#              mlflow/  MLflow artifacts         (mlflow server --artifacts-destination)
resource "google_storage_bucket" "main" {
  name                        = local.bucket_name
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false

  lifecycle_rule {
    condition {
      age            = var.cache_retention_days
      matches_prefix = ["cache/"]
    }
    action {
      type = "Delete"
    }
  }

  lifecycle_rule {
    condition {
      age            = var.run_retention_days
      matches_prefix = ["runs/"]
    }
    action {
      type = "Delete"
    }
  }

  lifecycle_rule {
    condition {
      age = 1
    }
    action {
      type = "AbortIncompleteMultipartUpload"
    }
  }

  depends_on = [google_project_service.apis]
}

resource "google_artifact_registry_repository" "images" {
  location      = var.region
  repository_id = var.name
  format        = "DOCKER"
  description   = "ptdistill CPU, GPU and MLflow images (images/build.sh)"
  depends_on    = [google_project_service.apis]
}
