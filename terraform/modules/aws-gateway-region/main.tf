# One region's gateway: Meridian on ECS Fargate behind a regional ALB
# (alb.tf), scaled on concurrent streams (autoscaling.tf). The config is an
# SSM parameter rendered by the meridian-config module; secrets come from
# Secrets Manager by reference.

data "aws_caller_identity" "current" {}
data "aws_region" "current" {}

locals {
  account = data.aws_caller_identity.current.account_id
  region  = data.aws_region.current.name
  ports   = { http = 8080, grpc = 50051, admin = 9090 }
  metrics = 9091 # meridian-config's loopback /metrics listener, which the sidecar scrapes
  secrets = merge(var.secret_arns, { MERIDIAN_CONFIG = aws_ssm_parameter.config.arn }, module.listener_tls.secrets)
  log     = { logDriver = "awslogs", options = { "awslogs-group" = aws_cloudwatch_log_group.gateway.name, "awslogs-region" = local.region } }
}

# The listener certificate: its secrets, and the shell writing them to files
# under umask 077 (then out of the environment) before Meridian starts. ECS reads
# secrets at task start: a rotated certificate reaches new tasks
# (aws ecs update-service --force-new-deployment), whose draining predecessors
# finish their streams first.
module "listener_tls" {
  source       = "./listener-tls"
  listener_tls = var.listener_tls
}

data "aws_iam_policy_document" "key" {
  #checkov:skip=CKV_AWS_109,CKV_AWS_111,CKV_AWS_356:A key policy's "*" resource is the key itself; delegating to the account root is the AWS default key policy.
  statement {
    sid       = "AccountAdministers"
    actions   = ["kms:*"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = ["arn:aws:iam::${local.account}:root"]
    }
  }
  statement {
    sid       = "CloudWatchLogs"
    actions   = ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
    resources = ["*"]
    principals {
      type        = "Service"
      identifiers = ["logs.${local.region}.amazonaws.com"]
    }
    condition {
      test     = "ArnLike"
      variable = "kms:EncryptionContext:aws:logs:arn"
      values   = ["arn:aws:logs:${local.region}:${local.account}:log-group:*"]
    }
  }
}

resource "aws_kms_key" "gateway" {
  description             = "${var.name} gateway logs, config and exec sessions"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.key.json
  tags                    = var.tags
}

resource "aws_cloudwatch_log_group" "gateway" {
  name              = "/meridian/${var.name}"
  retention_in_days = 365
  kms_key_id        = aws_kms_key.gateway.arn
  tags              = var.tags
}

resource "aws_ssm_parameter" "config" {
  name   = "/meridian/${var.name}/config"
  type   = "SecureString"
  tier   = "Advanced"
  key_id = aws_kms_key.gateway.arn
  value  = var.config_yaml
  tags   = var.tags
}

resource "aws_ecs_cluster" "gateway" {
  name = var.name
  setting {
    name  = "containerInsights"
    value = "enabled"
  }
  configuration {
    execute_command_configuration {
      kms_key_id = aws_kms_key.gateway.arn
      logging    = "OVERRIDE"
      log_configuration {
        cloud_watch_encryption_enabled = true
        cloud_watch_log_group_name     = aws_cloudwatch_log_group.gateway.name
      }
    }
  }
  tags = var.tags
}

resource "aws_ecs_task_definition" "gateway" {
  family                   = var.name
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = var.cpu
  memory                   = var.memory
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.task.arn
  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = "X86_64"
  }
  volume {
    name = "tmp"
  }
  container_definitions = jsonencode([
    {
      name      = "meridian"
      image     = var.image
      essential = true
      # The config arrives in an environment variable (from SSM) and is
      # written to the task's scratch volume: the root filesystem is read-only.
      entryPoint             = ["/bin/sh", "-c"]
      command                = ["umask 077 && printf '%s' \"$MERIDIAN_CONFIG\" > /tmp/meridian.yaml && ${module.listener_tls.shell}exec meridian serve --config /tmp/meridian.yaml"]
      readonlyRootFilesystem = true
      mountPoints            = [{ sourceVolume = "tmp", containerPath = "/tmp" }]
      portMappings           = [for port in values(local.ports) : { containerPort = port, protocol = "tcp" }]
      secrets                = [for k in sort(keys(local.secrets)) : { name = k, valueFrom = local.secrets[k] }]
      stopTimeout            = 120 # SIGTERM: readyz 503, streams finish within the grace period
      logConfiguration       = merge(local.log, { options = merge(local.log.options, { "awslogs-stream-prefix" = "meridian" }) })
    },
    {
      name                   = "adot"
      image                  = var.adot_image
      essential              = false
      readonlyRootFilesystem = true
      environment            = [{ name = "AOT_CONFIG_CONTENT", value = local.adot_config }]
      logConfiguration       = merge(local.log, { options = merge(local.log.options, { "awslogs-stream-prefix" = "adot" }) })
    },
  ])
  tags = var.tags
}

resource "aws_ecs_service" "gateway" {
  name                              = var.name
  cluster                           = aws_ecs_cluster.gateway.id
  task_definition                   = aws_ecs_task_definition.gateway.arn
  launch_type                       = "FARGATE"
  platform_version                  = "LATEST"
  desired_count                     = var.min_tasks
  health_check_grace_period_seconds = 60
  enable_execute_command            = var.enable_execute_command
  propagate_tags                    = "SERVICE"
  network_configuration {
    subnets          = var.private_subnet_ids
    security_groups  = [aws_security_group.tasks.id]
    assign_public_ip = false
  }
  load_balancer {
    target_group_arn = aws_lb_target_group.http.arn
    container_name   = "meridian"
    container_port   = local.ports.http
  }
  load_balancer {
    target_group_arn = local.passthrough ? aws_lb_target_group.grpc_passthrough[0].arn : aws_lb_target_group.grpc[0].arn
    container_name   = "meridian"
    container_port   = local.ports.grpc
  }
  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }
  lifecycle {
    ignore_changes = [desired_count] # owned by autoscaling
  }
  depends_on = [aws_lb_listener.https, aws_lb_listener.grpc_passthrough]
  tags       = var.tags
}
