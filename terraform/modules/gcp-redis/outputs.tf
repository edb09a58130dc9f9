output "host" {
  description = "Private address (rediss://:AUTH@HOST:PORT/0 goes in the MERIDIAN_REDIS_URL secret)."
  value       = google_redis_instance.control_plane.host
}

output "port" {
  description = "Port."
  value       = google_redis_instance.control_plane.port
}

output "server_ca_certs" {
  description = "CA of the TLS endpoint (clients must trust it)."
  value       = google_redis_instance.control_plane.server_ca_certs
}
