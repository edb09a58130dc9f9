output "endpoint_id" {
  description = "The endpoint ID Meridian's vertex options name."
  value       = google_vertex_ai_endpoint.endpoint.name
}

output "location" {
  description = "Its location."
  value       = var.region
}
