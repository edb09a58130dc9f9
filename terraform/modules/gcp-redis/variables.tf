variable "name" {
  description = "Instance name."
  type        = string
}

variable "project" {
  description = "GCP project."
  type        = string
}

variable "region" {
  description = "Region of the instance."
  type        = string
}

variable "network" {
  description = "VPC network (self link or id) with private service access configured."
  type        = string
}

variable "memory_size_gb" {
  description = "Capacity; the control plane's data is small (splits, counters, audit log)."
  type        = number
  default     = 5
}

variable "kms_key_name" {
  description = "Cloud KMS key (null: Google-managed encryption)."
  type        = string
  default     = null
}

variable "labels" {
  description = "Labels for the instance."
  type        = map(string)
  default     = {}
}
