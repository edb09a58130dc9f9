output "endpoint_name" {
  description = "The endpoint's name (= var.endpoint_name once created)."
  value       = aws_sagemaker_endpoint.endpoint.name
}

output "endpoint_arn" {
  description = "For the gateway task role's invoke permission."
  value       = aws_sagemaker_endpoint.endpoint.arn
}

output "variants" {
  description = "Variant name => model version."
  value       = { for v in var.variants : v.name => v.version }
}

output "discovery_tags" {
  description = "The tags Meridian's SageMaker discovery reads."
  value       = local.discovery_tags
}
