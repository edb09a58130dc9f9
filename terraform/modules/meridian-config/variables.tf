variable "regions" {
  description = "Meridian regions (cloud:name) with their jurisdiction tags, e.g. { name = \"aws:eu-west-1\", tags = [\"EU\", \"IE\"] }."
  type = list(object({
    name = string
    tags = list(string)
    dial = optional(number, 100)
  }))
}

variable "models" {
  description = "Logical models and their version split (weights in percent)."
  type = list(object({
    name        = string
    versions    = map(number)
    cost_weight = optional(number, 0)
  }))
}

variable "sagemaker_backends" {
  description = "SageMaker endpoints (or one production variant each, with variant set) deployed by Terraform."
  type = list(object({
    name            = string
    model           = string
    version         = string
    aws_region      = string
    endpoint_name   = string
    variant         = optional(string)
    container       = optional(string, "vllm")
    served_model    = string
    max_concurrency = optional(number, 256)
    price_input     = optional(number, 0)
    price_output    = optional(number, 0)
  }))
  default = []
}

variable "vertex_backends" {
  description = "Vertex AI endpoints deployed by Terraform."
  type = list(object({
    name            = string
    model           = string
    version         = string
    project         = string
    project_number  = string # the dedicated DNS name's {project_number}
    location        = string
    endpoint_id     = string
    route           = optional(string, "chat_completions")
    served_model    = string
    max_concurrency = optional(number, 256)
    price_input     = optional(number, 0)
    price_output    = optional(number, 0)
  }))
  default = []
}

variable "gce_discovery" {
  description = "Discovery of the self-hosted GPU pools (labels and port label as set on the instance template)."
  type = object({
    project      = string
    labels       = map(string)
    port_label   = optional(string, "meridian-port")
    accelerators = optional(list(string), [])
    zones        = optional(list(string), [])
  })
  default = null
}

variable "sagemaker_discovery_regions" {
  description = "AWS regions where endpoints tagged meridian:discover=true (deployed outside this Terraform) are discovered."
  type        = list(string)
  default     = []
}

variable "allowed_networks" {
  description = "CIDRs a discovered backend address must fall in (the GPU pools' subnets)."
  type        = list(string)
  default     = []
}

variable "refresh_seconds" {
  description = "Discovery refresh interval."
  type        = number
  default     = 30
}

variable "tenants" {
  description = "Tenants: API keys as sha256:<hex> or env:VARIABLE references, never in clear; identities: client-certificate SANs (a SPIFFE ID URI or a DNS name) that are the tenant on the mTLS gRPC listener (listener_tls.client_ca)."
  type = list(object({
    name       = string
    api_keys   = optional(list(string), [])
    identities = optional(list(string), [])
    residency  = optional(list(string))
    models     = optional(list(string))
  }))
}

variable "store_url" {
  description = "Control-plane Redis URL or env:VARIABLE reference (it carries the auth token)."
  type        = string
  default     = "env:MERIDIAN_REDIS_URL"
}

variable "admin_token" {
  description = "Admin API token as sha256:<hex> or env:VARIABLE."
  type        = string
  default     = "env:MERIDIAN_ADMIN_TOKEN"
}

variable "ports" {
  description = "Listener ports inside the container (metrics: the loopback-only /metrics listener a sidecar scrapes)."
  type = object({
    http    = optional(number, 8080)
    grpc    = optional(number, 50051)
    admin   = optional(number, 9090)
    metrics = optional(number, 9091)
  })
  default = {}
}

variable "listener_tls" {
  description = "TLS on the gateway's listeners (listen.tls): PEM paths inside the container, where the platform module writes them from the secret store (aws-gateway-region: listener_tls.files). cert and key serve HTTP, admin and gRPC; client_ca makes gRPC require client certificates from that CA (mTLS; tenants' identities name them). null: the listeners speak clear (Cloud Run, whose front end terminates TLS, drops listen.tls in any case)."
  type = object({
    cert      = string
    key       = string
    client_ca = optional(string)
  })
  default = null
}

variable "transfer_per_gb" {
  description = "cost.transfer_per_gb: USD per GB (10^9 bytes) of request and response between a gateway's region and a backend's other one (0: transfer counted in bytes, priced at nothing)."
  type        = number
  default     = 0
  validation {
    condition     = var.transfer_per_gb >= 0
    error_message = "transfer_per_gb must be >= 0."
  }
}

variable "transfer_pairs" {
  description = "cost.transfer_pairs: USD per GB per cloud pair in the direction of the bytes, e.g. { \"aws->gcp\" = 0.09 }; a pair not named costs transfer_per_gb."
  type        = map(number)
  default     = {}
  validation {
    # Meridian's own check (gateway/config/cost.py), at plan time rather than at every gateway's start
    condition     = alltrue([for pair, per_gb in var.transfer_pairs : can(regex("^[a-z0-9-]+->[a-z0-9-]+$", pair)) && per_gb >= 0])
    error_message = "transfer_pairs: write each cloud pair as \"FROM->TO\" (e.g. \"aws->gcp\"), with a price per GB >= 0."
  }
}
