output "yaml" {
  description = "meridian.yaml for every gateway replica (validated by tests/terraform against gateway.config.model)."
  value       = yamlencode(local.config)
}

output "config" {
  description = "The same configuration as an object."
  value       = local.config
}

output "cloud_run_yaml" {
  description = "meridian.yaml for Cloud Run (gcp-gateway-region): without listen.tls, since Cloud Run's front end terminates TLS and reaches the container in clear on its one port."
  value       = yamlencode(merge(local.config, { listen = { for k, v in local.config.listen : k => v if k != "tls" } }))
}

output "cloud_run_grpc_yaml" {
  description = "meridian.yaml for gcp-gateway-region's gRPC service: gRPC on Cloud Run's one port (8080, h2c behind the load balancer), the HTTP and admin listeners on loopback, no listen.tls."
  value = yamlencode(merge(local.config, {
    listen = {
      grpc    = "0.0.0.0:8080"
      http    = "127.0.0.1:8081"
      admin   = "127.0.0.1:${var.ports.admin}"
      metrics = local.config.listen.metrics
    }
  }))
}
