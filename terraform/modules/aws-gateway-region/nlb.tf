# gRPC with listener_tls: a network load balancer passing TCP through to the
# tasks' gRPC port, so the TLS session is the gateway's own: its certificate
# (from Secrets Manager, listener_tls), ALPN h2, and the client certificate
# of an internal service (mTLS, listen.tls.grpc.client_ca), which a
# TLS-terminating load balancer would never forward. Health checks ask the
# HTTP listener's /readyz over HTTPS, so a draining task leaves the NLB as it
# leaves the ALB.

resource "aws_security_group" "nlb" {
  count       = local.passthrough ? 1 : 0
  name        = "${var.name}-nlb"
  description = "Meridian ${var.name} gRPC load balancer (TLS passthrough)"
  vpc_id      = var.vpc_id
  tags        = var.tags
}

resource "aws_vpc_security_group_ingress_rule" "nlb_grpc" {
  for_each          = local.passthrough ? toset(var.ingress_cidrs) : toset([])
  security_group_id = aws_security_group.nlb[0].id
  description       = "gRPC over TLS from clients"
  cidr_ipv4         = each.value
  ip_protocol       = "tcp"
  from_port         = var.grpc_port
  to_port           = var.grpc_port
}

resource "aws_vpc_security_group_egress_rule" "nlb_tasks" {
  for_each                     = local.passthrough ? toset([tostring(local.ports.grpc), tostring(local.ports.http)]) : toset([])
  security_group_id            = aws_security_group.nlb[0].id
  description                  = "To the gateway tasks (gRPC, and /readyz health checks)"
  referenced_security_group_id = aws_security_group.tasks.id
  ip_protocol                  = "tcp"
  from_port                    = tonumber(each.value)
  to_port                      = tonumber(each.value)
}

resource "aws_vpc_security_group_ingress_rule" "tasks_from_nlb" {
  for_each                     = local.passthrough ? toset([tostring(local.ports.grpc), tostring(local.ports.http)]) : toset([])
  security_group_id            = aws_security_group.tasks.id
  description                  = "From the gRPC load balancer"
  referenced_security_group_id = aws_security_group.nlb[0].id
  ip_protocol                  = "tcp"
  from_port                    = tonumber(each.value)
  to_port                      = tonumber(each.value)
}

resource "aws_lb" "grpc" {
  count                            = local.passthrough ? 1 : 0
  name                             = "${var.name}-grpc"
  load_balancer_type               = "network"
  internal                         = false
  security_groups                  = [aws_security_group.nlb[0].id]
  subnets                          = var.public_subnet_ids
  enable_cross_zone_load_balancing = true
  enable_deletion_protection       = var.deletion_protection
  access_logs {
    bucket  = var.access_logs_bucket
    prefix  = "nlb/${var.name}"
    enabled = true
  }
  tags = var.tags
}

resource "aws_lb_target_group" "grpc_passthrough" {
  count                = local.passthrough ? 1 : 0
  name                 = "${var.name}-grpc-tls"
  target_type          = "ip"
  vpc_id               = var.vpc_id
  port                 = local.ports.grpc
  protocol             = "TCP"
  preserve_client_ip   = "false" # the tasks admit the NLB's security group, not client addresses
  deregistration_delay = 120
  health_check {
    protocol            = "HTTPS"
    port                = tostring(local.ports.http)
    path                = "/readyz"
    matcher             = "200"
    interval            = 10
    timeout             = 5
    healthy_threshold   = 2
    unhealthy_threshold = 2
  }
  tags = var.tags
}

resource "aws_lb_listener" "grpc_passthrough" {
  # TCP on purpose: TLS (1.2+, h2) ends in the gateway, which checks client
  # certificates (mTLS); a TLS listener here would end the session and drop them.
  count             = local.passthrough ? 1 : 0
  load_balancer_arn = aws_lb.grpc[0].arn
  port              = var.grpc_port
  protocol          = "TCP"
  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.grpc_passthrough[0].arn
  }
  tags = var.tags
}
