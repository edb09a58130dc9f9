variable "name" {
  description = "Name of the global datastore and prefix of its replication groups."
  type        = string
}

variable "node_type" {
  description = "Cache node type (the global datastore needs M5/R5 or newer)."
  type        = string
  default     = "cache.r7g.large"
}

variable "engine_version" {
  description = "Redis OSS engine version."
  type        = string
  default     = "7.1"
}

variable "auth_token" {
  description = "Redis AUTH token (16-128 printable characters). It lands in Terraform state: keep state encrypted."
  type        = string
  sensitive   = true
}

variable "primary" {
  description = "The writable region: its VPC, private subnets and the networks of the gateways (all regions) that connect."
  type = object({
    vpc_id       = string
    subnet_ids   = list(string)
    client_cidrs = list(string)
  })
}

variable "secondary" {
  description = "The read-only replica region (promoted if the primary region fails)."
  type = object({
    vpc_id       = string
    subnet_ids   = list(string)
    client_cidrs = list(string)
  })
}

variable "tags" {
  description = "Tags for every resource."
  type        = map(string)
  default     = {}
}
