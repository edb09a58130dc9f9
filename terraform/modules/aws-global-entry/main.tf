# The global entry: latency-based A records for one public name, one per
# region, each guarded by a Route 53 health check on the gateway's /readyz
# (503 while a region drains or has not loaded). Route 53 sends each client to
# the lowest-latency healthy region; a drained or failed region drops out
# within about 30 s (3 failures x 10 s).

resource "aws_route53_health_check" "gateway" {
  for_each          = { for e in var.entries : e.id => e }
  type              = "HTTPS"
  fqdn              = each.value.health_fqdn
  ip_address        = each.value.health_ip
  port              = 443
  resource_path     = "/readyz"
  request_interval  = 10
  failure_threshold = 3
  measure_latency   = true
  enable_sni        = each.value.health_fqdn != null
  tags              = merge(var.tags, { Name = "meridian-${each.key}" })
}

resource "aws_route53_record" "gateway" {
  #checkov:skip=CKV2_AWS_23:Targets are the regional load balancers (ALB aliases or GCP addresses passed in), outside this module's graph.
  for_each        = { for e in var.entries : e.id => e }
  zone_id         = var.zone_id
  name            = var.record_name
  type            = "A"
  set_identifier  = each.key
  health_check_id = aws_route53_health_check.gateway[each.key].id
  ttl             = each.value.ip == null ? null : 60
  records         = each.value.ip == null ? null : [each.value.ip]

  latency_routing_policy {
    region = each.value.latency_region
  }

  dynamic "alias" {
    for_each = each.value.alias == null ? [] : [each.value.alias]
    content {
      name                   = alias.value.dns_name
      zone_id                = alias.value.zone_id
      evaluate_target_health = true
    }
  }
}
