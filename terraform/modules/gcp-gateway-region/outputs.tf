output "ip_address" {
  description = "The regional load balancer's address (target of the global entry)."
  value       = google_compute_address.gateway.address
}

output "service_account" {
  description = "The identity Meridian runs as."
  value       = google_service_account.gateway.email
}

output "service_name" {
  description = "Cloud Run service."
  value       = google_cloud_run_v2_service.gateway.name
}
