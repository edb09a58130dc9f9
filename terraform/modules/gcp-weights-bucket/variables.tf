variable "name" {
  description = "Bucket name (globally unique)."
  type        = string
}

variable "project" {
  description = "GCP project."
  type        = string
}

variable "region" {
  description = "Bucket location (the gateway region, so weights are local to it)."
  type        = string
}

variable "log_bucket" {
  description = "Existing bucket receiving this bucket's usage logs."
  type        = string
}

variable "kms_key_name" {
  description = "Cloud KMS key for default encryption (null: Google-managed)."
  type        = string
  default     = null
}

variable "noncurrent_version_days" {
  description = "Days a replaced weights object is kept."
  type        = number
  default     = 30
}

variable "labels" {
  description = "Labels for the bucket."
  type        = map(string)
  default     = {}
}
