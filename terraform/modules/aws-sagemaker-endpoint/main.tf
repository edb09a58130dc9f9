# A SageMaker endpoint with one production variant per model version. Its
# tags follow Meridian's discovery schema (regions/discovery/sagemaker.py):
# meridian:model, meridian:variant:<NAME> = <version>, meridian:served-model,
# meridian:container. Terraform-managed endpoints are listed in the generated
# config, so by default they are tagged meridian:discover=terraform and the
# default discovery filter (meridian:discover=true) leaves them alone.

data "aws_caller_identity" "current" {}
data "aws_region" "current" {}
data "aws_partition" "current" {}

data "aws_iam_policy_document" "assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["sagemaker.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [data.aws_caller_identity.current.account_id]
    }
  }
}

resource "aws_iam_role" "model" {
  name               = "${var.endpoint_name}-model"
  assume_role_policy = data.aws_iam_policy_document.assume.json
  tags               = var.tags
}

locals {
  repositories = distinct([
    for v in var.variants : "arn:${data.aws_partition.current.partition}:ecr:*:*:repository/${split(":", split("/", v.image)[1])[0]}"
    if length(split("/", v.image)) > 1
  ])
}

data "aws_iam_policy_document" "model" {
  statement {
    sid       = "Weights"
    actions   = ["s3:GetObject", "s3:ListBucket"]
    resources = [var.weights_bucket_arn, "${var.weights_bucket_arn}/*"]
  }
  statement {
    sid       = "WeightsKey"
    actions   = ["kms:Decrypt"]
    resources = [var.weights_kms_key_arn]
  }
  statement {
    sid       = "Image"
    actions   = ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"]
    resources = local.repositories
  }
  statement {
    # GetAuthorizationToken has no resource-level permissions.
    sid       = "Registry"
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"]
  }
  statement {
    sid       = "Logs"
    actions   = ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["arn:${data.aws_partition.current.partition}:logs:${data.aws_region.current.name}:${data.aws_caller_identity.current.account_id}:log-group:/aws/sagemaker/Endpoints/${var.endpoint_name}:*"]
  }
  statement {
    sid       = "Network"
    actions   = ["ec2:CreateNetworkInterface", "ec2:CreateNetworkInterfacePermission", "ec2:DeleteNetworkInterface", "ec2:DeleteNetworkInterfacePermission", "ec2:DescribeNetworkInterfaces", "ec2:DescribeVpcs", "ec2:DescribeDhcpOptions", "ec2:DescribeSubnets", "ec2:DescribeSecurityGroups"]
    resources = ["*"]
    condition {
      test     = "StringEquals"
      variable = "aws:RequestedRegion"
      values   = [data.aws_region.current.name]
    }
  }
}

resource "aws_iam_role_policy" "model" {
  name   = "weights-image-logs"
  role   = aws_iam_role.model.id
  policy = data.aws_iam_policy_document.model.json
}

resource "aws_security_group" "model" {
  #checkov:skip=CKV2_AWS_5:Attached through aws_sagemaker_model.vpc_config, which checkov's graph does not connect.
  name        = "${var.endpoint_name}-model"
  description = "SageMaker ${var.endpoint_name} model containers"
  vpc_id      = var.vpc_id
  tags        = var.tags
}

resource "aws_vpc_security_group_egress_rule" "model_https" {
  security_group_id = aws_security_group.model.id
  description       = "S3 and ECR over TLS (VPC endpoints or NAT)"
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
}

resource "aws_sagemaker_model" "variant" {
  for_each                 = { for v in var.variants : v.name => v }
  name                     = "${var.endpoint_name}-${each.key}"
  execution_role_arn       = aws_iam_role.model.arn
  enable_network_isolation = true
  primary_container {
    image = each.value.image
    environment = merge(
      { SERVED_MODEL_NAME = var.served_model, OPTION_MODEL_ID = "/opt/ml/model" },
      each.value.environment,
    )
    model_data_source {
      s3_data_source {
        s3_uri           = each.value.weights_s3_uri
        s3_data_type     = "S3Prefix"
        compression_type = "None"
      }
    }
  }
  vpc_config {
    subnets            = var.subnet_ids
    security_group_ids = [aws_security_group.model.id]
  }
  tags = var.tags
}

resource "aws_sagemaker_endpoint_configuration" "endpoint" {
  #checkov:skip=CKV_AWS_98:GPU instance types with local NVMe storage (ml.g5, ml.g6, ml.p4d) reject a KMS key for the storage volume; their instance storage is encrypted by the hardware.
  name_prefix = "${var.endpoint_name}-"
  dynamic "production_variants" {
    for_each = var.variants
    content {
      variant_name                                      = production_variants.value.name
      model_name                                        = aws_sagemaker_model.variant[production_variants.value.name].name
      instance_type                                     = production_variants.value.instance_type
      initial_instance_count                            = production_variants.value.instance_count
      initial_variant_weight                            = production_variants.value.weight
      container_startup_health_check_timeout_in_seconds = 1800
      model_data_download_timeout_in_seconds            = 1800
    }
  }
  lifecycle {
    create_before_destroy = true
  }
  tags = var.tags
}

locals {
  discovery_tags = merge(
    {
      "meridian:discover"     = var.discoverable ? "true" : "terraform"
      "meridian:model"        = var.model
      "meridian:served-model" = var.served_model
      "meridian:container"    = var.container
    },
    { for v in var.variants : "meridian:variant:${v.name}" => v.version },
  )
}

resource "aws_sagemaker_endpoint" "endpoint" {
  name                 = var.endpoint_name
  endpoint_config_name = aws_sagemaker_endpoint_configuration.endpoint.name
  tags                 = merge(var.tags, local.discovery_tags)
}
