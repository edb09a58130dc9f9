output "bucket" {
  description = "Bucket name."
  value       = google_storage_bucket.weights.name
}

output "url" {
  description = "gs:// URL."
  value       = google_storage_bucket.weights.url
}
