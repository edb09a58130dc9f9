variable "name" {
  description = "Bucket name (globally unique)."
  type        = string
}

variable "access_log_bucket" {
  description = "Existing bucket that receives this bucket's server access logs."
  type        = string
}

variable "noncurrent_version_days" {
  description = "Days a replaced or deleted weights object is kept before expiry."
  type        = number
  default     = 30
}

variable "tags" {
  description = "Tags for every resource."
  type        = map(string)
  default     = {}
}
