variable "name" {
  description = "Prefix of this region's gateway resources."
  type        = string
}

variable "project" {
  description = "GCP project."
  type        = string
}

variable "region" {
  description = "GCP region."
  type        = string
}

variable "image" {
  description = "Meridian container image (Artifact Registry)."
  type        = string
}

variable "config_yaml" {
  description = "meridian.yaml (the meridian-config module's cloud_run_yaml output, without listen.tls: Cloud Run's front end terminates TLS), mounted as a file."
  type        = string
}

variable "grpc_config_yaml" {
  description = "meridian.yaml for the gRPC service (meridian-config's cloud_run_grpc_yaml): a second Cloud Run service serving gRPC in h2c on its one port, behind the same load balancer (an HTTP2 backend service; gRPC paths route to it). The load balancer terminates TLS, so client certificates (mTLS identities) do not reach it: internal services use API keys here. null: no gRPC in this region."
  type        = string
  default     = null
}

variable "secret_ids" {
  description = "Environment variables from Secret Manager (name => secret id): MERIDIAN_REDIS_URL, MERIDIAN_ADMIN_TOKEN, the env: API keys. Created outside Terraform."
  type        = map(string)
}

variable "network" {
  description = "VPC network (Direct VPC egress to Redis and the GPU pools)."
  type        = string
}

variable "subnetwork" {
  description = "Subnetwork of the Cloud Run instances."
  type        = string
}

variable "proxy_subnet_cidr" {
  description = "Range for the regional load balancer's proxy-only subnet."
  type        = string
}

variable "ssl_certificates" {
  description = "Regional Compute SSL certificates (self links) for the public name; or certificate_manager_certificates instead."
  type        = list(string)
  default     = []
}

variable "certificate_manager_certificates" {
  description = "Regional Certificate Manager certificates (projects/P/locations/REGION/certificates/NAME) for the public name: Google-managed or uploaded, renewed there without a change here. Exactly one of this and ssl_certificates."
  type        = list(string)
  default     = []
}

variable "security_policy" {
  description = "Regional Cloud Armor policy for the load balancer (null: none)."
  type        = string
  default     = null
}

variable "weights_bucket" {
  description = "The region's weights bucket name (replication reads and writes it)."
  type        = string
}

variable "min_instances" {
  description = "Fewest instances (kept warm: a cold start delays first tokens)."
  type        = number
  default     = 2
}

variable "max_instances" {
  description = "Most instances."
  type        = number
  default     = 20
}

variable "streams_per_instance" {
  description = "Concurrent requests per instance: Cloud Run scales out when in-flight streams exceed it."
  type        = number
  default     = 200
}

variable "kms_key_name" {
  description = "Cloud KMS key for the config secret and the service (null: Google-managed)."
  type        = string
  default     = null
}

variable "labels" {
  description = "Labels."
  type        = map(string)
  default     = {}
}
