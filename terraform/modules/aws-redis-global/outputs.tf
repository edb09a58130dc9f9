output "primary_endpoint" {
  description = "Host every gateway connects to (rediss://:TOKEN@HOST:6379/0, stored as the MERIDIAN_REDIS_URL secret)."
  value       = aws_elasticache_replication_group.primary.primary_endpoint_address
}

output "secondary_endpoint" {
  description = "The secondary's endpoint (writable only after a promotion)."
  value       = aws_elasticache_replication_group.secondary.primary_endpoint_address
}

output "global_replication_group_id" {
  description = "For aws elasticache failover-global-replication-group."
  value       = aws_elasticache_global_replication_group.control_plane.global_replication_group_id
}
