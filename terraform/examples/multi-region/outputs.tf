output "meridian_yaml" {
  description = "Each region's gateway meridian.yaml, by region name (also in SSM and Secret Manager for the services)."
  value       = module.meridian_config.yaml
}

output "public_name" {
  description = "Where clients send requests."
  value       = module.global_entry.fqdn
}

output "regional_entries" {
  description = "Each region's load balancer (for health checks and direct tests)."
  value = {
    "aws:us-east-1"    = module.gateway_us.alb_dns_name
    "aws:eu-west-1"    = module.gateway_eu.alb_dns_name
    "gcp:us-central1"  = module.gcp_gateway_us.ip_address
    "gcp:europe-west4" = module.gcp_gateway_eu.ip_address
  }
}

output "grpc_name" {
  description = "Where gRPC clients connect (port 443)."
  value       = module.grpc_entry.fqdn
}

output "grpc_entries" {
  description = "Each region's gRPC entry: on AWS the network load balancer passing TLS through to the gateway, on GCP the regional load balancer."
  value = {
    "aws:us-east-1"    = module.gateway_us.grpc_dns_name
    "aws:eu-west-1"    = module.gateway_eu.grpc_dns_name
    "gcp:us-central1"  = module.gcp_gateway_us.ip_address
    "gcp:europe-west4" = module.gcp_gateway_eu.ip_address
  }
}

output "redis_primary_endpoint" {
  description = "Host for the MERIDIAN_REDIS_URL secret (rediss://:TOKEN@HOST:6379/0)."
  value       = var.control_plane_home == "aws" ? module.redis[0].primary_endpoint : module.memorystore[0].host
}

output "gpu_pool_instance_group" {
  description = "The discovered GPU pool's managed instance group."
  value       = module.gpu_pool_us.instance_group
}

output "redis_global_replication_group_id" {
  description = "For aws elasticache failover-global-replication-group (null with control_plane_home = gcp)."
  value       = var.control_plane_home == "aws" ? module.redis[0].global_replication_group_id : null
}
