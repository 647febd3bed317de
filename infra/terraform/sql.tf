# MLflow's backend store: PostgreSQL with a private IP only (no public IP, no authorized
# networks); the MLflow pod reaches it through the Cloud SQL Auth Proxy sidecar.
resource "google_sql_database_instance" "mlflow" {
  name                = "${var.name}-mlflow"
  region              = var.region
  database_version    = "POSTGRES_16"
  deletion_protection = var.deletion_protection

  settings {
    tier              = var.db_tier
    edition           = "ENTERPRISE"
    availability_type = "ZONAL"
    disk_autoresize   = true

    ip_configuration {
      ipv4_enabled                                  = false
      private_network                               = google_compute_network.vpc.id
      enable_private_path_for_google_cloud_services = true
      ssl_mode                                      = "ENCRYPTED_ONLY"
    }

    backup_configuration {
      enabled                        = true
      point_in_time_recovery_enabled = true
    }
  }

  depends_on = [google_service_networking_connection.private_services]
}

resource "google_sql_database" "mlflow" {
  name     = "mlflow"
  instance = google_sql_database_instance.mlflow.name
}

resource "random_password" "mlflow_db" {
  length  = 32
  special = false
}

# The password lives in Terraform state (keep the state bucket private) and goes into the
# Kubernetes Secret mlflow/mlflow-db (infra/README.md); it is never committed.
resource "google_sql_user" "mlflow" {
  name     = "mlflow"
  instance = google_sql_database_instance.mlflow.name
  password = random_password.mlflow_db.result
}
