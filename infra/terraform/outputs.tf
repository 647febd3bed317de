output "cluster_name" {
  value = google_container_cluster.main.name
}

output "region" {
  value = var.region
}

output "bucket" {
  description = "Pipeline bucket: --pipeline-root gs://<bucket>/runs --artifact-store gs://<bucket>."
  value       = google_storage_bucket.main.name
}

output "registry" {
  description = "REGISTRY for images/build.sh."
  value       = "${google_artifact_registry_repository.images.location}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.images.repository_id}"
}

output "pipeline_runner_sa" {
  description = "Annotate KSA kubeflow/pipeline-runner with iam.gke.io/gcp-service-account=<this>."
  value       = google_service_account.pipeline_runner.email
}

output "mlflow_sa" {
  description = "Annotate KSA mlflow/mlflow with iam.gke.io/gcp-service-account=<this>."
  value       = google_service_account.mlflow.email
}

output "mlflow_db_connection_name" {
  description = "Cloud SQL instance connection name for the Auth Proxy sidecar."
  value       = google_sql_database_instance.mlflow.connection_name
}

output "mlflow_db_password" {
  value     = random_password.mlflow_db.result
  sensitive = true
}
