output "discovery_labels" {
  description = "The labels discovery filters on (= var.discovery_labels)."
  value       = var.discovery_labels
}

output "port_label" {
  description = "The label carrying the port (= var.port_label)."
  value       = var.port_label
}

output "accelerator_type" {
  description = "GPU type (= var.accelerator_type)."
  value       = var.accelerator_type
}

output "instance_group" {
  description = "The managed instance group."
  value       = google_compute_region_instance_group_manager.pool.instance_group
}

output "instance_labels" {
  description = "Every label an instance carries."
  value       = local.labels
}

output "instance_metadata" {
  description = "The meridian-* metadata an instance carries."
  value       = { for k, v in google_compute_instance_template.pool.metadata : k => v if startswith(k, "meridian-") }
}
