# Workload Identity: each Kubernetes service account impersonates one Google service account
# that holds only what its pods need.

# Pipeline pods (KFP standalone runs them as KSA kubeflow/pipeline-runner): read/write objects of
# the pipeline bucket, nothing else.
resource "google_service_account" "pipeline_runner" {
  account_id   = "${var.name}-pipeline"
  display_name = "ptdistill pipeline runner (KFP pods)"
}

resource "google_storage_bucket_iam_member" "pipeline_runner" {
  bucket = google_storage_bucket.main.name
  role   = "roles/storage.objectAdmin"
  member = "serviceAccount:${google_service_account.pipeline_runner.email}"
}

resource "google_service_account_iam_member" "pipeline_runner_wi" {
  service_account_id = google_service_account.pipeline_runner.name
  role               = "roles/iam.workloadIdentityUser"
  member             = "serviceAccount:${var.project_id}.svc.id.goog[${var.kfp_namespace}/pipeline-runner]"
  depends_on         = [google_container_cluster.main]
}

# KFP's own services (ml-pipeline, ml-pipeline-ui, ...) read run outputs from the bucket for the UI.
resource "google_service_account_iam_member" "kfp_system_wi" {
  for_each           = toset(["ml-pipeline", "ml-pipeline-ui", "ml-pipeline-visualizationserver"])
  service_account_id = google_service_account.pipeline_runner.name
  role               = "roles/iam.workloadIdentityUser"
  member             = "serviceAccount:${var.project_id}.svc.id.goog[${var.kfp_namespace}/${each.value}]"
  depends_on         = [google_container_cluster.main]
}

# MLflow server: objects of the bucket (artifacts under mlflow/) and a Cloud SQL connection to
# its own instance only (IAM condition), through the Auth Proxy sidecar.
resource "google_service_account" "mlflow" {
  account_id   = "${var.name}-mlflow"
  display_name = "ptdistill MLflow tracking server"
}

resource "google_storage_bucket_iam_member" "mlflow" {
  bucket = google_storage_bucket.main.name
  role   = "roles/storage.objectAdmin"
  member = "serviceAccount:${google_service_account.mlflow.email}"
}

resource "google_project_iam_member" "mlflow_sql" {
  project = var.project_id
  role    = "roles/cloudsql.client"
  member  = "serviceAccount:${google_service_account.mlflow.email}"

  condition {
    title      = "only-the-mlflow-instance"
    expression = "resource.name == \"projects/${var.project_id}/instances/${google_sql_database_instance.mlflow.name}\""
  }
}

resource "google_service_account_iam_member" "mlflow_wi" {
  service_account_id = google_service_account.mlflow.name
  role               = "roles/iam.workloadIdentityUser"
  member             = "serviceAccount:${var.project_id}.svc.id.goog[${var.mlflow_namespace}/mlflow]"
  depends_on         = [google_container_cluster.main]
}
