output "bucket" {
  description = "Bucket name."
  value       = aws_s3_bucket.weights.id
}

output "arn" {
  description = "Bucket ARN."
  value       = aws_s3_bucket.weights.arn
}

output "kms_key_arn" {
  description = "The key encrypting the weights (readers need kms:Decrypt)."
  value       = aws_kms_key.weights.arn
}
