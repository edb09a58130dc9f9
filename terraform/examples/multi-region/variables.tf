variable "name" {
  description = "Deployment name (prefix of every resource)."
  type        = string
  default     = "meridian"
}

variable "image" {
  description = "Meridian image for ECS (ECR) and Cloud Run (Artifact Registry mirror)."
  type = object({
    aws = string
    gcp = string
  })
}

variable "public_name" {
  description = "The names clients call: record for the HTTP API (api.example.com), grpc_record for gRPC (grpc.api.example.com: on AWS the TLS-passthrough NLBs, on GCP the same load balancer), and the Route 53 zone holding them. The listener certificates and the GCP load balancer's must cover grpc_record."
  type = object({
    record      = string
    grpc_record = string
    zone_id     = string
  })
}

variable "aws_networks" {
  description = "Per AWS region: the VPC, subnets, the ALB's ACM certificate, access-log bucket, secret ARNs (env name => ARN) the gateways use, and the Secrets Manager secrets of the gateway's own listener certificate (listener_tls: PEM chain, key, and the CA of internal services' client certificates)."
  type = map(object({
    vpc_id             = string
    cidr               = string
    public_subnet_ids  = list(string)
    private_subnet_ids = list(string)
    certificate_arn    = string
    access_logs_bucket = string
    secret_arns        = map(string)
    listener_tls = object({
      cert_secret_arn      = string
      key_secret_arn       = string
      client_ca_secret_arn = string
    })
  }))
}

variable "gcp_project" {
  description = "GCP project of the GCP regions."
  type        = string
}

variable "gcp_project_number" {
  description = "The GCP project's number: Vertex AI's dedicated endpoint DNS names carry it."
  type        = string
}

variable "gcp_network" {
  description = "GCP VPC network (self link) with private service access."
  type        = string
}

variable "gcp_regions" {
  description = "Per GCP region: subnetwork, its CIDR, the load balancer's proxy-only range and its regional Certificate Manager certificates for the public name."
  type = map(object({
    subnetwork        = string
    cidr              = string
    proxy_subnet_cidr = string
    certificates      = list(string)
  }))
}

variable "gcp_secret_ids" {
  description = "Secret Manager secrets for the GCP gateways (env name => secret id)."
  type        = map(string)
}

variable "log_buckets" {
  description = "Existing buckets for storage access logs: aws (one per AWS region) and gcp."
  type = object({
    aws = map(string)
    gcp = string
  })
}

variable "redis_auth_token" {
  description = "AUTH token of the control-plane Redis (also in the MERIDIAN_REDIS_URL secrets)."
  type        = string
  sensitive   = true
}

variable "control_plane_home" {
  description = "Where the control-plane Redis lives: aws (ElastiCache global datastore) or gcp (Memorystore)."
  type        = string
  default     = "aws"
  validation {
    condition     = contains(["aws", "gcp"], var.control_plane_home)
    error_message = "control_plane_home is aws or gcp."
  }
}

variable "tenants" {
  description = "Tenants; API keys as sha256:<hex> or env:VARIABLE (the variable must be among the secrets); identities: client-certificate SANs (SPIFFE IDs) of internal services on the mTLS gRPC listener."
  type = list(object({
    name       = string
    api_keys   = optional(list(string), [])
    identities = optional(list(string), [])
    residency  = optional(list(string))
    models     = optional(list(string))
  }))
  default = [
    { name = "default", api_keys = ["env:MERIDIAN_KEY_DEFAULT"] },
    { name = "eu-only", api_keys = ["env:MERIDIAN_KEY_EU"], residency = ["EU"] },
  ]
}
