variable "endpoint_id" {
  description = "Numeric endpoint ID (up to 10 digits, no leading zero); Meridian addresses the endpoint by it."
  type        = string
  validation {
    condition     = can(regex("^[1-9][0-9]{0,9}$", var.endpoint_id))
    error_message = "endpoint_id must be numeric, without a leading zero, at most 10 digits."
  }
}

variable "display_name" {
  description = "Display name."
  type        = string
}

variable "project" {
  description = "GCP project."
  type        = string
}

variable "region" {
  description = "Location: a regional one (the global endpoint gives no control over where processing happens)."
  type        = string
}

variable "kms_key_name" {
  description = "Cloud KMS key for the endpoint (null: Google-managed)."
  type        = string
  default     = null
}

variable "labels" {
  description = "Labels."
  type        = map(string)
  default     = {}
}
