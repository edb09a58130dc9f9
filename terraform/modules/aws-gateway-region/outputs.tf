output "alb_dns_name" {
  description = "The region's load balancer (target of the global entry)."
  value       = aws_lb.gateway.dns_name
}

output "alb_zone_id" {
  description = "Hosted zone of the load balancer, for Route 53 alias records."
  value       = aws_lb.gateway.zone_id
}

output "task_role_arn" {
  description = "The role Meridian runs as (grant it access to further endpoints or buckets)."
  value       = aws_iam_role.task.arn
}

output "tasks_security_group_id" {
  description = "Security group of the tasks (allow it on Redis and GPU backends)."
  value       = aws_security_group.tasks.id
}

output "cluster_name" {
  description = "ECS cluster (ECS Exec: aws ecs execute-command --cluster ...)."
  value       = aws_ecs_cluster.gateway.name
}

output "grpc_dns_name" {
  description = "Where gRPC clients connect: the TLS-passthrough network load balancer with listener_tls (port grpc_port; give it a name the gateway's certificate covers), else the ALB (port 443)."
  value       = local.passthrough ? aws_lb.grpc[0].dns_name : aws_lb.gateway.dns_name
}

output "grpc_zone_id" {
  description = "Hosted zone of grpc_dns_name, for a Route 53 alias record."
  value       = local.passthrough ? aws_lb.grpc[0].zone_id : aws_lb.gateway.zone_id
}
