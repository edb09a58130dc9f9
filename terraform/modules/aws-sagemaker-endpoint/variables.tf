variable "endpoint_name" {
  description = "SageMaker endpoint name (also the prefix of its models and config)."
  type        = string
}

variable "model" {
  description = "Meridian's logical model name the endpoint serves."
  type        = string
}

variable "served_model" {
  description = "The model name the container expects in requests."
  type        = string
}

variable "container" {
  description = "Serving container kind: vllm, tgi or lmi (it decides the payload format)."
  type        = string
  default     = "vllm"
  validation {
    condition     = contains(["vllm", "tgi", "lmi"], var.container)
    error_message = "container must be vllm, tgi or lmi."
  }
}

variable "variants" {
  description = "Production variants, one per model version (blue/green); weights are SageMaker's own split, Meridian addresses each variant directly."
  type = list(object({
    name           = string
    version        = string
    image          = string
    weights_s3_uri = string
    instance_type  = optional(string, "ml.g5.2xlarge")
    instance_count = optional(number, 1)
    weight         = optional(number, 1)
    environment    = optional(map(string), {})
  }))
  validation {
    condition     = length(var.variants) >= 1 && length(var.variants) <= 10
    error_message = "An endpoint has 1 to 10 production variants."
  }
}

variable "weights_bucket_arn" {
  description = "The region's weights bucket (the models read their weights from it)."
  type        = string
}

variable "weights_kms_key_arn" {
  description = "The key of the weights bucket."
  type        = string
}

variable "vpc_id" {
  description = "VPC the model containers run in."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets of the model containers."
  type        = list(string)
}

variable "discoverable" {
  description = "Tag meridian:discover=true so gateways discover it (false: it is in the generated config instead)."
  type        = bool
  default     = false
}

variable "tags" {
  description = "Tags for every resource."
  type        = map(string)
  default     = {}
}
