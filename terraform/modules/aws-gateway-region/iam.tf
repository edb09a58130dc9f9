# Two roles: the execution role (ECS pulls the image, reads the config and
# secrets) and the task role (what Meridian itself calls: SageMaker runtime,
# SageMaker discovery, the weights buckets). Credentials reach Meridian from
# the task role through the boto3 chain, never from the config.

data "aws_iam_policy_document" "ecs_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account]
    }
  }
}

resource "aws_iam_role" "execution" {
  name               = "${var.name}-execution"
  assume_role_policy = data.aws_iam_policy_document.ecs_assume.json
  tags               = var.tags
}

resource "aws_iam_role_policy_attachment" "execution" {
  role       = aws_iam_role.execution.name
  policy_arn = "arn:aws:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"
}

data "aws_iam_policy_document" "execution" {
  statement {
    sid       = "Config"
    actions   = ["ssm:GetParameters"]
    resources = [aws_ssm_parameter.config.arn]
  }
  statement {
    sid       = "Secrets"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = concat(values(var.secret_arns), values(module.listener_tls.secrets))
  }
  statement {
    sid       = "Decrypt"
    actions   = ["kms:Decrypt"]
    resources = [aws_kms_key.gateway.arn]
  }
}

resource "aws_iam_role_policy" "execution" {
  name   = "config-and-secrets"
  role   = aws_iam_role.execution.id
  policy = data.aws_iam_policy_document.execution.json
}

resource "aws_iam_role" "task" {
  name               = "${var.name}-task"
  assume_role_policy = data.aws_iam_policy_document.ecs_assume.json
  tags               = var.tags
}

locals {
  endpoints = length(var.sagemaker_endpoint_arns) > 0 ? var.sagemaker_endpoint_arns : ["arn:aws:sagemaker:${local.region}:${local.account}:endpoint/*"]
}

data "aws_iam_policy_document" "task" {
  statement {
    sid       = "InvokeEndpoints"
    actions   = ["sagemaker:InvokeEndpoint", "sagemaker:InvokeEndpointWithResponseStream"]
    resources = local.endpoints
  }
  statement {
    sid       = "DescribeEndpoints"
    actions   = ["sagemaker:DescribeEndpoint", "sagemaker:ListTags"]
    resources = ["arn:aws:sagemaker:*:${local.account}:endpoint/*", "arn:aws:sagemaker:*:${local.account}:inference-component/*"]
  }
  statement {
    # The List calls have no resource-level permissions: "*" is the only form.
    sid       = "DiscoverEndpoints"
    actions   = ["sagemaker:ListEndpoints", "sagemaker:ListInferenceComponents"]
    resources = ["*"]
  }
  dynamic "statement" {
    for_each = length(var.weights_bucket_arns) > 0 ? [1] : []
    content {
      sid       = "WeightsBuckets"
      actions   = ["s3:GetObject", "s3:PutObject", "s3:AbortMultipartUpload", "s3:ListBucket", "s3:GetBucketLocation", "s3:ListMultipartUploadParts"]
      resources = concat(var.weights_bucket_arns, [for arn in var.weights_bucket_arns : "${arn}/*"])
    }
  }
  dynamic "statement" {
    for_each = length(var.kms_key_arns) > 0 ? [1] : []
    content {
      sid       = "WeightsKeys"
      actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
      resources = var.kms_key_arns
    }
  }
  dynamic "statement" {
    for_each = var.enable_execute_command ? [1] : []
    content {
      # ECS Exec's session channels have no resource-level permissions.
      sid       = "ExecSessions"
      actions   = ["ssmmessages:CreateControlChannel", "ssmmessages:CreateDataChannel", "ssmmessages:OpenControlChannel", "ssmmessages:OpenDataChannel"]
      resources = ["*"]
    }
  }
  dynamic "statement" {
    for_each = var.enable_execute_command ? [1] : []
    content {
      sid       = "ExecSessionKey"
      actions   = ["kms:Decrypt"]
      resources = [aws_kms_key.gateway.arn]
    }
  }
  statement {
    sid       = "StreamsMetric"
    actions   = ["logs:PutLogEvents", "logs:CreateLogStream", "logs:CreateLogGroup", "logs:DescribeLogStreams"]
    resources = ["${aws_cloudwatch_log_group.metrics.arn}:*"]
  }
}

resource "aws_iam_role_policy" "task" {
  name   = "meridian"
  role   = aws_iam_role.task.id
  policy = data.aws_iam_policy_document.task.json
}
