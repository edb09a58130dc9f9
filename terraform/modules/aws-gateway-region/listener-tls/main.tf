# The listener certificate's secrets as the task uses them: which environment
# variable carries which Secrets Manager secret, and the shell that writes each
# to its file before Meridian starts. Provider-free, so tests/terraform
# applies it offline and runs the shell it renders.

variable "listener_tls" {
  description = "The parent module's listener_tls (null: no TLS, nothing to write)."
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
}

locals {
  given = var.listener_tls == null ? [] : [var.listener_tls]
  files = { for e in flatten([for t in local.given : [
    { env = "MERIDIAN_TLS_CERT", arn = t.cert_secret_arn, file = t.files.cert },
    { env = "MERIDIAN_TLS_KEY", arn = t.key_secret_arn, file = t.files.key },
    { env = "MERIDIAN_TLS_CLIENT_CA", arn = t.client_ca_secret_arn, file = t.files.client_ca },
  ]]) : e.env => e if e.arn != null }
}

output "secrets" {
  description = "Environment variable => secret ARN, for the container's secrets."
  value       = { for k, v in local.files : k => v.arn }
}

output "files" {
  description = "Environment variable => the file it is written to."
  value       = { for k, v in local.files : k => v.file }
}

output "shell" {
  description = "sh commands, each ending in '&& ': write every PEM to its file (run under umask 077), then remove it from the environment Meridian inherits."
  value = join("", [
    for k in sort(keys(local.files)) : format("mkdir -p \"$(dirname '%s')\" && printf '%%s\\n' \"$%s\" > '%s' && unset %s && ", local.files[k].file, k, local.files[k].file, k)
  ])
}
