output "health_check_ids" {
  description = "Route 53 health check per region id."
  value       = { for k, v in aws_route53_health_check.gateway : k => v.id }
}

output "fqdn" {
  description = "The public name."
  value       = var.record_name
}
