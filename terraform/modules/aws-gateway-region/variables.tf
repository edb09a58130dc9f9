variable "name" {
  description = "Prefix for every resource of this region's gateway (at most 20 characters)."
  type        = string
  validation {
    condition     = length(var.name) <= 20
    error_message = "name must be at most 20 characters (load balancer names are limited to 32)."
  }
}

variable "image" {
  description = "Meridian container image (with the meridian console script on PATH)."
  type        = string
}

variable "adot_image" {
  description = "AWS Distro for OpenTelemetry collector: scrapes /metrics and publishes the streams metric autoscaling follows."
  type        = string
  default     = "public.ecr.aws/aws-observability/aws-otel-collector:v0.43.1"
}

variable "config_yaml" {
  description = "meridian.yaml (the meridian-config module's output)."
  type        = string
}

variable "secret_arns" {
  description = "Environment variables filled from Secrets Manager (name => secret ARN): MERIDIAN_REDIS_URL, MERIDIAN_ADMIN_TOKEN and the env: API keys the config names. Created outside Terraform so their values stay out of its state."
  type        = map(string)
}

variable "vpc_id" {
  description = "VPC of the gateway."
  type        = string
}

variable "public_subnet_ids" {
  description = "Subnets of the internet-facing load balancer."
  type        = list(string)
}

variable "private_subnet_ids" {
  description = "Subnets of the gateway tasks (with a NAT or VPC endpoints for AWS APIs)."
  type        = list(string)
}

variable "certificate_arn" {
  description = "ACM certificate for the public name (the global entry's record name)."
  type        = string
}

variable "ingress_cidrs" {
  description = "Who may reach the load balancer."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}

variable "admin_cidrs" {
  description = "Operator networks allowed to reach the admin API (port 9090) on the tasks; empty = none."
  type        = list(string)
  default     = []
}

variable "redis_cidrs" {
  description = "Networks of the control-plane Redis (the global datastore's primary)."
  type        = list(string)
}

variable "backend_cidrs" {
  description = "Networks of self-hosted GPU backends reachable from the tasks."
  type        = list(string)
  default     = []
}

variable "backend_ports" {
  description = "Ports of those backends."
  type        = list(number)
  default     = [8000]
}

variable "access_logs_bucket" {
  description = "Existing bucket for the load balancer's access logs (with the ELB log-delivery policy)."
  type        = string
}

variable "weights_bucket_arns" {
  description = "Weights buckets of every region (replication reads and writes them)."
  type        = list(string)
  default     = []
}

variable "kms_key_arns" {
  description = "Keys the tasks may use for weights buckets of other regions."
  type        = list(string)
  default     = []
}

variable "sagemaker_endpoint_arns" {
  description = "Endpoints the gateway may invoke; default: every endpoint in this account and region."
  type        = list(string)
  default     = []
}

variable "cpu" {
  description = "Task CPU units."
  type        = number
  default     = 2048
}

variable "memory" {
  description = "Task memory (MiB)."
  type        = number
  default     = 4096
}

variable "min_tasks" {
  description = "Fewest tasks (also the initial count)."
  type        = number
  default     = 2
}

variable "max_tasks" {
  description = "Most tasks."
  type        = number
  default     = 20
}

variable "streams_per_task" {
  description = "Target concurrent streams per task: autoscaling keeps the average near it."
  type        = number
  default     = 200
}

variable "enable_execute_command" {
  description = "Allow ECS Exec into tasks (operators run the meridian CLI there)."
  type        = bool
  default     = false
}

variable "deletion_protection" {
  description = "Protect the load balancer from deletion."
  type        = bool
  default     = true
}

variable "tags" {
  description = "Tags for every resource."
  type        = map(string)
  default     = {}
}

variable "listener_tls" {
  description = "TLS on the gateway's own listeners. The PEM certificate chain, its key and (optional) the client CA are Secrets Manager secrets created outside Terraform (their values stay out of its state); the task writes each to its file under /tmp (files: the paths meridian-config's listener_tls names) before Meridian starts, and drops them from its environment. With it the ALB reaches the tasks over HTTPS, and gRPC is served by a network load balancer passing TLS through (TCP) to the gateway, so the gateway's certificate and its client-certificate check (mTLS) face the client. null: listeners in clear inside the VPC, gRPC through the ALB."
  type = object({
    cert_secret_arn      = string
    key_secret_arn       = string
    client_ca_secret_arn = optional(string)
    files = object({
      cert      = string
      key       = string
      client_ca = optional(string)
    })
  })
  default = null
  validation {
    condition = var.listener_tls == null || alltrue([
      for f in compact([try(var.listener_tls.files.cert, null), try(var.listener_tls.files.key, null), try(var.listener_tls.files.client_ca, null)]) : can(regex("^/tmp/[A-Za-z0-9._/-]+$", f))
    ])
    error_message = "listener_tls.files must be plain paths under /tmp/ (letters, digits, . _ - /): the task's root filesystem is read-only, and the paths are quoted into its shell."
  }
  validation {
    condition     = var.listener_tls == null || (try(var.listener_tls.client_ca_secret_arn, null) == null) == (try(var.listener_tls.files.client_ca, null) == null)
    error_message = "listener_tls: client_ca_secret_arn and files.client_ca go together."
  }
}

variable "grpc_port" {
  description = "Port of the gRPC network load balancer's TLS-passthrough listener (with listener_tls)."
  type        = number
  default     = 443
}
