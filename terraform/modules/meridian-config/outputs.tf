output "yaml" {
  description = "meridian.yaml for every gateway replica (validated by tests/terraform against gateway.config.model)."
  value       = yamlencode(local.config)
}

output "config" {
  description = "The same configuration as an object."
  value       = local.config
}

output "cloud_run_yaml" {
  description = "meridian.yaml for Cloud Run (gcp-gateway-region): without listen.tls, since Cloud Run's front end terminates TLS and reaches the container in clear on its one port."
  value       = yamlencode(merge(local.config, { listen = { for k, v in local.config.listen : k => v if k != "tls" } }))
}
