variable "zone_id" {
  description = "Route 53 hosted zone of the public name."
  type        = string
}

variable "record_name" {
  description = "The public name clients use (api.example.com); every region's certificate covers it."
  type        = string
}

variable "entries" {
  description = <<-EOT
    One per gateway region. latency_region: the AWS region whose latency
    measurements route clients here (for GCP regions, the nearest AWS
    region). Either alias (an ALB) or ip (a GCP regional load balancer).
    health_fqdn / health_ip: where Route 53 checks /readyz.
  EOT
  type = list(object({
    id             = string
    latency_region = string
    alias = optional(object({
      dns_name = string
      zone_id  = string
    }))
    ip          = optional(string)
    health_fqdn = optional(string)
    health_ip   = optional(string)
  }))
  validation {
    condition     = alltrue([for e in var.entries : (e.alias == null) != (e.ip == null)])
    error_message = "Each entry needs exactly one of alias or ip."
  }
}

variable "tags" {
  description = "Tags for the health checks."
  type        = map(string)
  default     = {}
}
