# Autoscaling on concurrent streams, the gateway's real load (CPU stays low
# while streams wait on GPUs). The ADOT sidecar scrapes Meridian's loopback
# /metrics listener (listen.metrics: no token and no TLS, reachable only from
# inside the task's network namespace) every 15 s, sums
# meridian_in_flight_requests over models into meridian_streams_in_flight and
# publishes it to CloudWatch (namespace Meridian) with this service's
# dimensions; target tracking keeps the per-task average near
# var.streams_per_task.

locals {
  dimensions = { ClusterName = var.name, ServiceName = var.name }
  adot_config = yamlencode({
    receivers = {
      prometheus = {
        config = {
          scrape_configs = [{
            job_name        = "meridian"
            scrape_interval = "15s"
            metrics_path    = "/metrics"
            static_configs  = [{ targets = ["127.0.0.1:${local.metrics}"] }]
          }]
        }
      }
    }
    processors = {
      "metricstransform" = {
        transforms = [{
          include    = "meridian_in_flight_requests"
          action     = "insert"
          new_name   = "meridian_streams_in_flight"
          operations = [{ action = "aggregate_labels", label_set = [], aggregation_type = "sum" }]
        }]
      }
      "attributes/dimensions" = {
        actions = [for k, v in local.dimensions : { key = k, value = v, action = "upsert" }]
      }
      batch = {}
    }
    exporters = {
      awsemf = {
        namespace               = "Meridian"
        log_group_name          = aws_cloudwatch_log_group.metrics.name
        dimension_rollup_option = "NoDimensionRollup"
        metric_declarations = [{
          dimensions            = [keys(local.dimensions)]
          metric_name_selectors = ["meridian_streams_in_flight"]
        }]
      }
    }
    service = {
      pipelines = {
        metrics = {
          receivers  = ["prometheus"]
          processors = ["metricstransform", "attributes/dimensions", "batch"]
          exporters  = ["awsemf"]
        }
      }
    }
  })
}

resource "aws_cloudwatch_log_group" "metrics" {
  name              = "/meridian/${var.name}/metrics"
  retention_in_days = 365
  kms_key_id        = aws_kms_key.gateway.arn
  tags              = var.tags
}

resource "aws_appautoscaling_target" "gateway" {
  service_namespace  = "ecs"
  resource_id        = "service/${aws_ecs_cluster.gateway.name}/${aws_ecs_service.gateway.name}"
  scalable_dimension = "ecs:service:DesiredCount"
  min_capacity       = var.min_tasks
  max_capacity       = var.max_tasks
}

resource "aws_appautoscaling_policy" "streams" {
  name               = "${var.name}-concurrent-streams"
  policy_type        = "TargetTrackingScaling"
  service_namespace  = aws_appautoscaling_target.gateway.service_namespace
  resource_id        = aws_appautoscaling_target.gateway.resource_id
  scalable_dimension = aws_appautoscaling_target.gateway.scalable_dimension
  target_tracking_scaling_policy_configuration {
    target_value       = var.streams_per_task
    scale_out_cooldown = 60
    scale_in_cooldown  = 300 # scale in slowly: a removed task drains its streams first
    customized_metric_specification {
      namespace   = "Meridian"
      metric_name = "meridian_streams_in_flight"
      statistic   = "Average"
      dynamic "dimensions" {
        for_each = local.dimensions
        content {
          name  = dimensions.key
          value = dimensions.value
        }
      }
    }
  }
}
