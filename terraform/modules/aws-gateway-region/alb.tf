# The regional entry: an internet-facing ALB (TLS 1.3 policy, WAF, access
# logs) forwarding the OpenAI-compatible API to port 8080 and, without
# listener_tls, gRPC (content-type application/grpc) to port 50051. With
# listener_tls the ALB reaches the tasks over HTTPS and gRPC leaves the ALB
# for the TLS-passthrough network load balancer (nlb.tf). Deregistration
# waits 120 s so streams finish on a task being replaced; the idle timeout is
# long enough for a slow first token.

locals {
  # listener_tls: the gateway terminates TLS itself; gRPC is passed through the NLB
  passthrough = var.listener_tls != null
  alb_ports   = local.passthrough ? [local.ports.http] : [local.ports.http, local.ports.grpc]
  target      = local.passthrough ? "HTTPS" : "HTTP"
}

resource "aws_security_group" "alb" {
  name        = "${var.name}-alb"
  description = "Meridian ${var.name} load balancer"
  vpc_id      = var.vpc_id
  tags        = var.tags
}

resource "aws_vpc_security_group_ingress_rule" "alb_https" {
  for_each          = toset(var.ingress_cidrs)
  security_group_id = aws_security_group.alb.id
  description       = "HTTPS from clients"
  cidr_ipv4         = each.value
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
}

resource "aws_vpc_security_group_egress_rule" "alb_tasks" {
  for_each                     = toset([for p in local.alb_ports : tostring(p)])
  security_group_id            = aws_security_group.alb.id
  description                  = "To the gateway tasks"
  referenced_security_group_id = aws_security_group.tasks.id
  ip_protocol                  = "tcp"
  from_port                    = tonumber(each.value)
  to_port                      = tonumber(each.value)
}

resource "aws_security_group" "tasks" {
  name        = "${var.name}-tasks"
  description = "Meridian ${var.name} gateway tasks"
  vpc_id      = var.vpc_id
  tags        = var.tags
}

resource "aws_vpc_security_group_ingress_rule" "tasks_from_alb" {
  for_each                     = toset([for p in local.alb_ports : tostring(p)])
  security_group_id            = aws_security_group.tasks.id
  description                  = "From the load balancer"
  referenced_security_group_id = aws_security_group.alb.id
  ip_protocol                  = "tcp"
  from_port                    = tonumber(each.value)
  to_port                      = tonumber(each.value)
}

resource "aws_vpc_security_group_ingress_rule" "tasks_admin" {
  for_each          = toset(var.admin_cidrs)
  security_group_id = aws_security_group.tasks.id
  description       = "Admin API from operator networks"
  cidr_ipv4         = each.value
  ip_protocol       = "tcp"
  from_port         = local.ports.admin
  to_port           = local.ports.admin
}

resource "aws_vpc_security_group_egress_rule" "tasks_https" {
  security_group_id = aws_security_group.tasks.id
  description       = "Cloud APIs and managed endpoints (SageMaker, Vertex, S3, GCS) over TLS"
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
}

resource "aws_vpc_security_group_egress_rule" "tasks_redis" {
  for_each          = toset(var.redis_cidrs)
  security_group_id = aws_security_group.tasks.id
  description       = "Control-plane Redis"
  cidr_ipv4         = each.value
  ip_protocol       = "tcp"
  from_port         = 6379
  to_port           = 6379
}

resource "aws_vpc_security_group_egress_rule" "tasks_backends" {
  for_each          = { for pair in setproduct(var.backend_cidrs, var.backend_ports) : "${pair[0]}:${pair[1]}" => pair }
  security_group_id = aws_security_group.tasks.id
  description       = "Self-hosted GPU backends"
  cidr_ipv4         = each.value[0]
  ip_protocol       = "tcp"
  from_port         = each.value[1]
  to_port           = each.value[1]
}

resource "aws_lb" "gateway" {
  name                       = "${var.name}-alb"
  load_balancer_type         = "application"
  internal                   = false
  security_groups            = [aws_security_group.alb.id]
  subnets                    = var.public_subnet_ids
  drop_invalid_header_fields = true
  enable_deletion_protection = var.deletion_protection
  idle_timeout               = 600
  access_logs {
    bucket  = var.access_logs_bucket
    prefix  = "alb/${var.name}"
    enabled = true
  }
  tags = var.tags
}

resource "aws_lb_target_group" "http" {
  name                 = "${var.name}-http"
  target_type          = "ip"
  vpc_id               = var.vpc_id
  port                 = local.ports.http
  protocol             = local.target
  deregistration_delay = 120
  health_check {
    protocol            = local.target
    path                = "/readyz"
    matcher             = "200"
    interval            = 10
    timeout             = 5
    healthy_threshold   = 2
    unhealthy_threshold = 2
  }
  tags = var.tags
}

resource "aws_lb_target_group" "grpc" {
  #checkov:skip=CKV_AWS_378:Reached only through a rule of the HTTPS listener (TLS 1.3 policy), which checkov's graph does not follow; targets sit in private subnets.
  count                = local.passthrough ? 0 : 1
  name                 = "${var.name}-grpc"
  target_type          = "ip"
  vpc_id               = var.vpc_id
  port                 = local.ports.grpc
  protocol             = "HTTP"
  protocol_version     = "GRPC"
  deregistration_delay = 120
  health_check {
    path                = "/grpc.health.v1.Health/Check"
    matcher             = "0"
    interval            = 10
    timeout             = 5
    healthy_threshold   = 2
    unhealthy_threshold = 2
  }
  tags = var.tags
}

resource "aws_lb_listener" "https" {
  load_balancer_arn = aws_lb.gateway.arn
  port              = 443
  protocol          = "HTTPS"
  ssl_policy        = "ELBSecurityPolicy-TLS13-1-2-2021-06"
  certificate_arn   = var.certificate_arn
  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.http.arn
  }
  tags = var.tags
}

resource "aws_lb_listener_rule" "grpc" {
  count        = local.passthrough ? 0 : 1
  listener_arn = aws_lb_listener.https.arn
  priority     = 10
  action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.grpc[0].arn
  }
  condition {
    http_header {
      http_header_name = "content-type"
      values           = ["application/grpc*"]
    }
  }
  tags = var.tags
}

resource "aws_wafv2_web_acl" "gateway" {
  name  = "${var.name}-gateway"
  scope = "REGIONAL"
  default_action {
    allow {}
  }

  rule {
    name     = "common"
    priority = 1
    override_action {
      none {}
    }
    statement {
      managed_rule_group_statement {
        vendor_name = "AWS"
        name        = "AWSManagedRulesCommonRuleSet"
        # Prompts are large bodies: Meridian enforces its own body limit (413).
        rule_action_override {
          name = "SizeRestrictions_BODY"
          action_to_use {
            count {}
          }
        }
      }
    }
    visibility_config {
      cloudwatch_metrics_enabled = true
      metric_name                = "${var.name}-common"
      sampled_requests_enabled   = true
    }
  }

  rule {
    name     = "known-bad-inputs"
    priority = 2
    override_action {
      none {}
    }
    statement {
      managed_rule_group_statement {
        vendor_name = "AWS"
        name        = "AWSManagedRulesKnownBadInputsRuleSet"
      }
    }
    visibility_config {
      cloudwatch_metrics_enabled = true
      metric_name                = "${var.name}-bad-inputs"
      sampled_requests_enabled   = true
    }
  }

  rule {
    name     = "anonymous-ip"
    priority = 4
    override_action {
      none {}
    }
    statement {
      managed_rule_group_statement {
        vendor_name = "AWS"
        name        = "AWSManagedRulesAnonymousIpList"
        # API clients legitimately run in clouds: count hosting providers, block the rest.
        rule_action_override {
          name = "HostingProviderIPList"
          action_to_use {
            count {}
          }
        }
      }
    }
    visibility_config {
      cloudwatch_metrics_enabled = true
      metric_name                = "${var.name}-anonymous-ip"
      sampled_requests_enabled   = true
    }
  }

  rule {
    name     = "ip-reputation"
    priority = 3
    override_action {
      none {}
    }
    statement {
      managed_rule_group_statement {
        vendor_name = "AWS"
        name        = "AWSManagedRulesAmazonIpReputationList"
      }
    }
    visibility_config {
      cloudwatch_metrics_enabled = true
      metric_name                = "${var.name}-ip-reputation"
      sampled_requests_enabled   = true
    }
  }

  visibility_config {
    cloudwatch_metrics_enabled = true
    metric_name                = "${var.name}-gateway"
    sampled_requests_enabled   = true
  }
  tags = var.tags
}

resource "aws_wafv2_web_acl_association" "gateway" {
  resource_arn = aws_lb.gateway.arn
  web_acl_arn  = aws_wafv2_web_acl.gateway.arn
}

resource "aws_cloudwatch_log_group" "waf" {
  name              = "aws-waf-logs-${var.name}"
  retention_in_days = 365
  kms_key_id        = aws_kms_key.gateway.arn
  tags              = var.tags
}

resource "aws_wafv2_web_acl_logging_configuration" "gateway" {
  resource_arn            = aws_wafv2_web_acl.gateway.arn
  log_destination_configs = [aws_cloudwatch_log_group.waf.arn]
  redacted_fields {
    single_header {
      name = "authorization"
    }
  }
}
