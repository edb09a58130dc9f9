# The gateway's configuration, rendered from what Terraform deploys, so the
# two never disagree. Every backend object has the same attributes (null where
# unused): Meridian's schema accepts null for optional fields, and uniform
# objects keep Terraform's type unification simple. The prices' tonumber() changes
# nothing for Terraform: checkov 3.3's renderer crashes substituting a float for
# `b.price_input` in a for expression (once a module indexes an output built on it).

locals {
  sagemaker = [
    for b in var.sagemaker_backends : {
      name            = b.name
      model           = b.model
      version         = b.version
      region          = "aws:${b.aws_region}"
      provider        = "sagemaker"
      url             = "https://runtime.sagemaker.${b.aws_region}.amazonaws.com"
      served_model    = b.served_model
      max_concurrency = b.max_concurrency
      price           = { input_per_m = tonumber(b.price_input), output_per_m = tonumber(b.price_output) }
      sagemaker = {
        endpoint_name  = b.endpoint_name
        region         = b.aws_region
        container      = b.container
        target_variant = b.variant
      }
      vertex = null
    }
  ]

  vertex = [
    for b in var.vertex_backends : {
      name            = b.name
      model           = b.model
      version         = b.version
      region          = "gcp:${b.location}"
      provider        = "vertex"
      url             = "https://${b.endpoint_id}.${b.location}-${b.project_number}.prediction.vertexai.goog"
      served_model    = b.served_model
      max_concurrency = b.max_concurrency
      price           = { input_per_m = tonumber(b.price_input), output_per_m = tonumber(b.price_output) }
      sagemaker       = null
      vertex = {
        project        = b.project
        project_number = b.project_number
        location       = b.location
        endpoint_id    = b.endpoint_id
        route          = b.route
      }
    }
  ]

  discovering = var.gce_discovery != null || length(var.sagemaker_discovery_regions) > 0

  # listen.tls: one certificate on the three listeners; client_ca on gRPC alone, the
  # listener a passthrough load balancer exposes (the HTTP listener sits behind a
  # TLS-terminating ALB, which presents no client certificate). The one-element
  # list keeps Terraform's conditional types simple: no list, no tls key.
  tls_given = var.listener_tls == null ? [] : [var.listener_tls]
  tls = [
    for t in local.tls_given : {
      tls = {
        http  = { cert = t.cert, key = t.key }
        admin = { cert = t.cert, key = t.key }
        grpc  = { cert = t.cert, key = t.key, client_ca = t.client_ca }
      }
    }
  ]

  config = {
    listen = merge({
      http  = "0.0.0.0:${var.ports.http}"
      grpc  = "0.0.0.0:${var.ports.grpc}"
      admin = "0.0.0.0:${var.ports.admin}"
      # /metrics without a token or TLS, on loopback: only a sidecar in the same
      # network namespace (the ADOT collector) reaches it
      metrics = "127.0.0.1:${var.ports.metrics}"
    }, local.tls...)
    store = { kind = "redis", url = var.store_url }
    admin = { token = var.admin_token }
    regions = [
      for r in var.regions : { name = r.name, tags = r.tags, dial = r.dial }
    ]
    models = [
      for m in var.models : { name = m.name, versions = m.versions, cost_weight = m.cost_weight }
    ]
    backends = concat(local.sagemaker, local.vertex)
    tenants = [
      for t in var.tenants : {
        name       = t.name
        api_keys   = t.api_keys
        identities = t.identities
        residency  = t.residency
        models     = t.models
      }
    ]
    discovery = local.discovering ? {
      refresh_s        = var.refresh_seconds
      allowed_networks = var.allowed_networks
      gce = var.gce_discovery == null ? null : {
        project      = var.gce_discovery.project
        labels       = var.gce_discovery.labels
        port_label   = var.gce_discovery.port_label
        accelerators = var.gce_discovery.accelerators
        zones        = var.gce_discovery.zones
      }
      sagemaker = length(var.sagemaker_discovery_regions) == 0 ? null : {
        regions = var.sagemaker_discovery_regions
      }
    } : null
  }

  # cost.region is where a gateway runs (transfer is priced between it and the serving
  # backend's region), so each region's gateway gets a config of its own.
  regional = {
    for r in var.regions : r.name => merge(local.config, {
      cost = {
        region          = r.name
        transfer_per_gb = var.transfer_per_gb
        transfer_pairs  = var.transfer_pairs
      }
    })
  }
}
