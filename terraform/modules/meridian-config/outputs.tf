output "yaml" {
  description = "meridian.yaml for every gateway replica (validated by tests/terraform against gateway.config.model)."
  value       = yamlencode(local.config)
}

output "config" {
  description = "The same configuration as an object."
  value       = local.config
}
