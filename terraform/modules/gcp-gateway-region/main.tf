# One GCP region's gateway: Meridian on Cloud Run behind a regional external
# Application Load Balancer (serverless NEG); with grpc_config_yaml, gRPC on a
# second Cloud Run service in h2c behind the same load balancer. Cloud Run
# scales on concurrent requests, which for Meridian are concurrent streams;
# CPU stays allocated
# (cpu_idle = false) because streams are served between requests. The config
# is a Secret Manager secret mounted as a file; credentials come from the
# service account (application-default credentials), never from the config.

resource "google_service_account" "gateway" {
  project      = var.project
  account_id   = "${var.name}-gw"
  display_name = "Meridian gateway ${var.name}"
}

resource "google_secret_manager_secret" "config" {
  project   = var.project
  secret_id = "${var.name}-config"
  labels    = var.labels
  replication {
    user_managed {
      replicas {
        location = var.region
        dynamic "customer_managed_encryption" {
          for_each = var.kms_key_name == null ? [] : [var.kms_key_name]
          content {
            kms_key_name = customer_managed_encryption.value
          }
        }
      }
    }
  }
}

resource "google_secret_manager_secret_version" "config" {
  secret      = google_secret_manager_secret.config.id
  secret_data = var.config_yaml
}

resource "google_secret_manager_secret_iam_member" "config" {
  project   = var.project
  secret_id = google_secret_manager_secret.config.secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.gateway.email}"
}

resource "google_secret_manager_secret_iam_member" "env" {
  for_each  = var.secret_ids
  project   = var.project
  secret_id = each.value
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.gateway.email}"
}

# Discovery lists instances; Vertex calls predict; replication uses the bucket.
resource "google_project_iam_member" "gateway" {
  for_each = toset(["roles/compute.viewer", "roles/aiplatform.user"])
  project  = var.project
  role     = each.value
  member   = "serviceAccount:${google_service_account.gateway.email}"
}

resource "google_storage_bucket_iam_member" "weights" {
  bucket = var.weights_bucket
  role   = "roles/storage.objectAdmin"
  member = "serviceAccount:${google_service_account.gateway.email}"
}

resource "google_cloud_run_v2_service" "gateway" {
  name                = var.name
  project             = var.project
  location            = var.region
  ingress             = "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER"
  deletion_protection = true
  labels              = var.labels

  template {
    service_account                  = google_service_account.gateway.email
    timeout                          = "3600s" # Cloud Run's ceiling on one streamed response
    max_instance_request_concurrency = var.streams_per_instance
    execution_environment            = "EXECUTION_ENVIRONMENT_GEN2"
    encryption_key                   = var.kms_key_name

    scaling {
      min_instance_count = var.min_instances
      max_instance_count = var.max_instances
    }

    vpc_access {
      egress = "PRIVATE_RANGES_ONLY"
      network_interfaces {
        network    = var.network
        subnetwork = var.subnetwork
      }
    }

    containers {
      image   = var.image
      command = ["meridian"]
      args    = ["serve", "--config", "/etc/meridian/meridian.yaml"]

      ports {
        container_port = 8080
      }

      resources {
        limits            = { cpu = "2", memory = "2Gi" }
        cpu_idle          = false
        startup_cpu_boost = true
      }

      dynamic "env" {
        for_each = var.secret_ids
        content {
          name = env.key
          value_source {
            secret_key_ref {
              secret  = env.value
              version = "latest"
            }
          }
        }
      }

      volume_mounts {
        name       = "config"
        mount_path = "/etc/meridian"
      }

      startup_probe {
        http_get {
          path = "/readyz"
        }
        period_seconds    = 2
        failure_threshold = 30
      }

      liveness_probe {
        http_get {
          path = "/healthz"
        }
        period_seconds = 10
      }
    }

    volumes {
      name = "config"
      secret {
        secret = google_secret_manager_secret.config.secret_id
        items {
          version = "latest"
          path    = "meridian.yaml"
        }
      }
    }
  }

  depends_on = [google_secret_manager_secret_iam_member.config, google_secret_manager_secret_version.config]
}

# -- gRPC: a second service, h2c end to end -------------------------------------
# Cloud Run serves one port and downgrades to HTTP/1.1 unless the port is
# named h2c; Meridian's HTTP listener speaks HTTP/1.1 and its gRPC listener
# h2c, so gRPC gets its own service (the same image, cloud_run_grpc_yaml).

resource "google_secret_manager_secret" "grpc_config" {
  count     = local.grpc ? 1 : 0
  project   = var.project
  secret_id = "${var.name}-grpc-config"
  labels    = var.labels
  replication {
    user_managed {
      replicas {
        location = var.region
        dynamic "customer_managed_encryption" {
          for_each = var.kms_key_name == null ? [] : [var.kms_key_name]
          content {
            kms_key_name = customer_managed_encryption.value
          }
        }
      }
    }
  }
}

resource "google_secret_manager_secret_version" "grpc_config" {
  count       = local.grpc ? 1 : 0
  secret      = google_secret_manager_secret.grpc_config[0].id
  secret_data = var.grpc_config_yaml
}

resource "google_secret_manager_secret_iam_member" "grpc_config" {
  count     = local.grpc ? 1 : 0
  project   = var.project
  secret_id = google_secret_manager_secret.grpc_config[0].secret_id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.gateway.email}"
}

resource "google_cloud_run_v2_service" "grpc" {
  count               = local.grpc ? 1 : 0
  name                = "${var.name}-grpc"
  project             = var.project
  location            = var.region
  ingress             = "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER"
  deletion_protection = true
  labels              = var.labels

  template {
    service_account                  = google_service_account.gateway.email
    timeout                          = "3600s"
    max_instance_request_concurrency = var.streams_per_instance
    execution_environment            = "EXECUTION_ENVIRONMENT_GEN2"
    encryption_key                   = var.kms_key_name

    scaling {
      min_instance_count = var.min_instances
      max_instance_count = var.max_instances
    }

    vpc_access {
      egress = "PRIVATE_RANGES_ONLY"
      network_interfaces {
        network    = var.network
        subnetwork = var.subnetwork
      }
    }

    containers {
      image   = var.image
      command = ["meridian"]
      args    = ["serve", "--config", "/etc/meridian/meridian.yaml"]

      ports {
        name           = "h2c"
        container_port = 8080
      }

      resources {
        limits            = { cpu = "2", memory = "2Gi" }
        cpu_idle          = false
        startup_cpu_boost = true
      }

      dynamic "env" {
        for_each = var.secret_ids
        content {
          name = env.key
          value_source {
            secret_key_ref {
              secret  = env.value
              version = "latest"
            }
          }
        }
      }

      volume_mounts {
        name       = "config"
        mount_path = "/etc/meridian"
      }

      # grpc.health.v1: SERVING once ready, NOT_SERVING while draining
      startup_probe {
        grpc {
          port = 8080
        }
        period_seconds    = 2
        failure_threshold = 30
      }

      liveness_probe {
        grpc {
          port = 8080
        }
        period_seconds = 10
      }
    }

    volumes {
      name = "config"
      secret {
        secret = google_secret_manager_secret.grpc_config[0].secret_id
        items {
          version = "latest"
          path    = "meridian.yaml"
        }
      }
    }
  }

  depends_on = [google_secret_manager_secret_iam_member.grpc_config, google_secret_manager_secret_version.grpc_config]
}

resource "google_compute_region_network_endpoint_group" "grpc" {
  count                 = local.grpc ? 1 : 0
  name                  = "${var.name}-grpc-neg"
  project               = var.project
  region                = var.region
  network_endpoint_type = "SERVERLESS"
  cloud_run {
    service = google_cloud_run_v2_service.grpc[0].name
  }
}

resource "google_compute_region_backend_service" "grpc" {
  count                 = local.grpc ? 1 : 0
  name                  = "${var.name}-grpc-backend"
  project               = var.project
  region                = var.region
  load_balancing_scheme = "EXTERNAL_MANAGED"
  protocol              = "HTTP2" # h2c to the h2c port; GRPC is Traffic Director's only
  security_policy       = var.security_policy
  backend {
    group           = google_compute_region_network_endpoint_group.grpc[0].id
    balancing_mode  = "UTILIZATION"
    capacity_scaler = 1.0
  }
  log_config {
    enable      = true
    sample_rate = 1.0
  }
}

# -- the regional external Application Load Balancer ----------------------------

resource "google_compute_subnetwork" "proxy" {
  name          = "${var.name}-proxy"
  project       = var.project
  region        = var.region
  network       = var.network
  ip_cidr_range = var.proxy_subnet_cidr
  purpose       = "REGIONAL_MANAGED_PROXY"
  role          = "ACTIVE"
}

resource "google_compute_region_network_endpoint_group" "gateway" {
  name                  = "${var.name}-neg"
  project               = var.project
  region                = var.region
  network_endpoint_type = "SERVERLESS"
  cloud_run {
    service = google_cloud_run_v2_service.gateway.name
  }
}

resource "google_compute_region_backend_service" "gateway" {
  name                  = "${var.name}-backend"
  project               = var.project
  region                = var.region
  load_balancing_scheme = "EXTERNAL_MANAGED"
  protocol              = "HTTPS"
  security_policy       = var.security_policy
  backend {
    group           = google_compute_region_network_endpoint_group.gateway.id
    balancing_mode  = "UTILIZATION"
    capacity_scaler = 1.0
  }
  log_config {
    enable      = true
    sample_rate = 1.0
  }
}

locals {
  grpc = var.grpc_config_yaml != null
  # gRPC's paths are /package.Service/Method: these services go to the gRPC backend
  grpc_paths = [
    "/meridian.v1.Inference/*",
    "/grpc.health.v1.Health/*",
    "/grpc.reflection.v1alpha.ServerReflection/*",
  ]
}

resource "google_compute_region_url_map" "gateway" {
  name            = "${var.name}-urls"
  project         = var.project
  region          = var.region
  default_service = google_compute_region_backend_service.gateway.id

  dynamic "host_rule" {
    for_each = local.grpc ? [1] : []
    content {
      hosts        = ["*"]
      path_matcher = "api"
    }
  }

  dynamic "path_matcher" {
    for_each = local.grpc ? [1] : []
    content {
      name            = "api"
      default_service = google_compute_region_backend_service.gateway.id
      path_rule {
        paths   = local.grpc_paths
        service = google_compute_region_backend_service.grpc[0].id
      }
    }
  }
}

resource "google_compute_region_ssl_policy" "gateway" {
  name            = "${var.name}-tls"
  project         = var.project
  region          = var.region
  profile         = "RESTRICTED"
  min_tls_version = "TLS_1_2"
}

resource "google_compute_region_target_https_proxy" "gateway" {
  name             = "${var.name}-https"
  project          = var.project
  region           = var.region
  url_map          = google_compute_region_url_map.gateway.id
  ssl_certificates = length(var.ssl_certificates) > 0 ? var.ssl_certificates : null
  # the API takes one kind or the other, never both
  certificate_manager_certificates = length(var.certificate_manager_certificates) > 0 ? var.certificate_manager_certificates : null
  ssl_policy                       = google_compute_region_ssl_policy.gateway.id
  lifecycle {
    precondition {
      condition     = (length(var.certificate_manager_certificates) > 0) != (length(var.ssl_certificates) > 0)
      error_message = "Give the load balancer's certificates as ssl_certificates or certificate_manager_certificates, exactly one of them."
    }
  }
}

resource "google_compute_address" "gateway" {
  name         = "${var.name}-ip"
  project      = var.project
  region       = var.region
  address_type = "EXTERNAL"
  network_tier = "STANDARD"
}

resource "google_compute_forwarding_rule" "gateway" {
  name                  = "${var.name}-https"
  project               = var.project
  region                = var.region
  load_balancing_scheme = "EXTERNAL_MANAGED"
  ip_protocol           = "TCP"
  port_range            = "443"
  target                = google_compute_region_target_https_proxy.gateway.id
  ip_address            = google_compute_address.gateway.id
  network               = var.network
  network_tier          = "STANDARD"
  depends_on            = [google_compute_subnetwork.proxy]
}
