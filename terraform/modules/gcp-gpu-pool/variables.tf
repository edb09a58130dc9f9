variable "name" {
  description = "Pool name (prefix of the template, group, health check and firewall rule)."
  type        = string
}

variable "project" {
  description = "GCP project."
  type        = string
}

variable "region" {
  description = "Region of the regional managed instance group."
  type        = string
}

variable "zones" {
  description = "Zones with capacity for the GPU type."
  type        = list(string)
}

variable "network" {
  description = "VPC network."
  type        = string
}

variable "subnetwork" {
  description = "Subnetwork of the instances (its range belongs in Meridian's allowed_networks)."
  type        = string
}

variable "gateway_cidrs" {
  description = "Networks of the gateways allowed to reach the serving port."
  type        = list(string)
}

variable "machine_type" {
  description = "Machine type."
  type        = string
  default     = "g2-standard-8"
}

variable "accelerator_type" {
  description = "GPU type (Meridian's discovery can restrict to it)."
  type        = string
  default     = "nvidia-l4"
}

variable "accelerator_count" {
  description = "GPUs per instance."
  type        = number
  default     = 1
}

variable "target_size" {
  description = "Instances in the group."
  type        = number
  default     = 2
}

variable "source_image" {
  description = "Boot image with NVIDIA drivers and Docker."
  type        = string
  default     = "projects/deeplearning-platform-release/global/images/family/common-cu124-debian-11-py310"
}

variable "server_image" {
  description = "The vLLM (or TGI) container image."
  type        = string
  default     = "vllm/vllm-openai:v0.6.6"
}

variable "provider_kind" {
  description = "vllm or tgi: how Meridian talks to the servers."
  type        = string
  default     = "vllm"
}

variable "model" {
  description = "Meridian's logical model name (metadata: GCE labels cannot hold dots)."
  type        = string
}

variable "version_name" {
  description = "The model version these servers run."
  type        = string
}

variable "served_model" {
  description = "Model name the server expects."
  type        = string
}

variable "weights_uri" {
  description = "gs:// prefix holding the weights (the region's weights bucket)."
  type        = string
}

variable "port" {
  description = "Serving port."
  type        = number
  default     = 8000
}

variable "discovery_labels" {
  description = "Labels Meridian's GCE discovery filters on (also given to the meridian-config module)."
  type        = map(string)
  default     = { "meridian-role" = "llm-backend" }
}

variable "port_label" {
  description = "Label carrying the serving port."
  type        = string
  default     = "meridian-port"
}

variable "secure_boot" {
  description = "Shielded VM secure boot (the image's NVIDIA driver must be signed)."
  type        = bool
  default     = true
}

variable "kms_key_self_link" {
  description = "Cloud KMS key for boot disks (null: Google-managed)."
  type        = string
  default     = null
}

variable "labels" {
  description = "Further labels."
  type        = map(string)
  default     = {}
}
