variable "project_id" {
  description = "GCP project to create everything in."
  type        = string
}

variable "region" {
  description = "Region of the cluster, bucket, database and image registry."
  type        = string
  default     = "europe-west4"
}

variable "name" {
  description = "Prefix of every resource name."
  type        = string
  default     = "ptdistill"
}

variable "bucket_name" {
  description = "GCS bucket for the KFP pipeline root, the teacher cache and MLflow artifacts (globally unique). Default: <project_id>-<name>."
  type        = string
  default     = ""
}

variable "cache_retention_days" {
  description = "Delete teacher-cache objects (cache/) this many days after creation."
  type        = number
  default     = 30
}

variable "run_retention_days" {
  description = "Delete pipeline-root objects (runs/) this many days after creation."
  type        = number
  default     = 90
}

variable "cpu_machine_type" {
  type    = string
  default = "e2-standard-4"
}

variable "cpu_min_nodes" {
  type    = number
  default = 1
}

variable "cpu_max_nodes" {
  type    = number
  default = 4
}

variable "gpu_machine_type" {
  type    = string
  default = "g2-standard-8"
}

variable "gpu_type" {
  description = "Accelerator type of the GPU pool (must be offered in the pool's zones)."
  type        = string
  default     = "nvidia-l4"
}

variable "gpu_count" {
  description = "GPUs per GPU node."
  type        = number
  default     = 1
}

variable "gpu_max_nodes" {
  description = "Upper bound of the GPU pool's autoscaler (it scales down to 0)."
  type        = number
  default     = 2
}

variable "gpu_spot" {
  description = "Use Spot VMs for the GPU pool (cheaper, may be preempted; KFP retries the step)."
  type        = bool
  default     = false
}

variable "gpu_node_locations" {
  description = "Zones of the GPU pool (empty: the cluster's). Pick zones that offer gpu_type."
  type        = list(string)
  default     = []
}

variable "master_authorized_cidr" {
  description = "CIDR allowed to reach the GKE control plane (your office/VPN), never the whole internet."
  type        = string
}

variable "db_tier" {
  type    = string
  default = "db-custom-1-3840"
}

variable "deletion_protection" {
  description = "Protect the cluster and the database from terraform destroy (set false before teardown)."
  type        = bool
  default     = true
}

variable "kfp_namespace" {
  description = "Namespace of Kubeflow Pipelines (its pipeline pods run as KSA pipeline-runner there)."
  type        = string
  default     = "kubeflow"
}

variable "mlflow_namespace" {
  type    = string
  default = "mlflow"
}
