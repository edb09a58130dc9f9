output "yaml" {
  description = "meridian.yaml per region (region name => YAML): the region's gateway replicas' config, with cost.region set to it (validated by tests/terraform against gateway.config.model)."
  value       = { for name, config in local.regional : name => yamlencode(config) }
}

output "config" {
  description = "The same configurations as objects (region name => config)."
  value       = local.regional
}

output "cloud_run_yaml" {
  description = "meridian.yaml per region for Cloud Run (gcp-gateway-region): without listen.tls, since Cloud Run's front end terminates TLS and reaches the container in clear on its one port."
  value = {
    for name, config in local.regional : name => yamlencode(merge(config, {
      listen = { for k, v in config.listen : k => v if k != "tls" }
    }))
  }
}

output "cloud_run_grpc_yaml" {
  description = "meridian.yaml per region for gcp-gateway-region's gRPC service: gRPC on Cloud Run's one port (8080, h2c behind the load balancer), the HTTP and admin listeners on loopback, no listen.tls."
  value = {
    for name, config in local.regional : name => yamlencode(merge(config, {
      listen = {
        grpc    = "0.0.0.0:8080"
        http    = "127.0.0.1:8081"
        admin   = "127.0.0.1:${var.ports.admin}"
        metrics = config.listen.metrics
      }
    }))
  }
}
