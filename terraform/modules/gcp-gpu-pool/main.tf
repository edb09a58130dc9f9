# A self-hosted GPU pool: a regional managed instance group of vLLM (or TGI)
# servers, labelled and annotated for Meridian's GCE discovery
# (regions/discovery/gce.py): labels meridian-role (the filter) and
# meridian-port; metadata meridian-model, meridian-version,
# meridian-served-model and meridian-provider (model names hold dots, which
# GCE labels cannot). Instances have no external address; the gateways reach
# their internal IPs, which Meridian only accepts inside allowed_networks.
# The MIG's autohealing uses the server's /health, and Meridian skips members
# the MIG is recreating or reports unhealthy.

locals {
  tag = "${var.name}-gpu"
  labels = merge(var.labels, var.discovery_labels, {
    (var.port_label) = tostring(var.port)
  })
  startup = <<-EOT
    #!/bin/bash
    set -euo pipefail
    mkdir -p /models
    gcloud storage cp --recursive "${var.weights_uri}/*" /models/
    docker run -d --restart=always --gpus all --ipc=host -p ${var.port}:${var.port} \
      -v /models:/models ${var.server_image} \
      --model /models --served-model-name "${var.served_model}" --port ${var.port}
  EOT
}

resource "google_service_account" "pool" {
  project      = var.project
  account_id   = "${var.name}-gpu"
  display_name = "Meridian GPU pool ${var.name}"
}

resource "google_compute_instance_template" "pool" {
  name_prefix  = "${var.name}-"
  project      = var.project
  region       = var.region
  machine_type = var.machine_type
  labels       = local.labels
  tags         = [local.tag]

  metadata = {
    "meridian-model"         = var.model
    "meridian-version"       = var.version_name
    "meridian-served-model"  = var.served_model
    "meridian-provider"      = var.provider_kind
    "install-nvidia-driver"  = "True"
    "block-project-ssh-keys" = "true"
    "enable-oslogin"         = "TRUE"
    "startup-script"         = local.startup
  }

  disk {
    source_image = var.source_image
    disk_size_gb = 200
    disk_type    = "pd-ssd"
    boot         = true
    auto_delete  = true
    dynamic "disk_encryption_key" {
      for_each = var.kms_key_self_link == null ? [] : [var.kms_key_self_link]
      content {
        kms_key_self_link = disk_encryption_key.value
      }
    }
  }

  network_interface {
    subnetwork = var.subnetwork
  }

  guest_accelerator {
    type  = var.accelerator_type
    count = var.accelerator_count
  }

  scheduling {
    on_host_maintenance = "TERMINATE"
    automatic_restart   = true
  }

  shielded_instance_config {
    enable_secure_boot          = var.secure_boot
    enable_vtpm                 = true
    enable_integrity_monitoring = true
  }

  service_account {
    email  = google_service_account.pool.email
    scopes = ["cloud-platform"]
  }

  lifecycle {
    create_before_destroy = true
  }
}

resource "google_compute_health_check" "pool" {
  name                = "${var.name}-health"
  project             = var.project
  check_interval_sec  = 15
  timeout_sec         = 5
  healthy_threshold   = 2
  unhealthy_threshold = 4
  http_health_check {
    port         = var.port
    request_path = "/health"
  }
  log_config {
    enable = true
  }
}

resource "google_compute_region_instance_group_manager" "pool" {
  name                      = var.name
  project                   = var.project
  region                    = var.region
  base_instance_name        = var.name
  target_size               = var.target_size
  distribution_policy_zones = var.zones

  version {
    name              = "primary"
    instance_template = google_compute_instance_template.pool.self_link_unique
  }

  named_port {
    name = "http"
    port = var.port
  }

  auto_healing_policies {
    health_check      = google_compute_health_check.pool.id
    initial_delay_sec = 1200 # weights download and load
  }

  update_policy {
    type                         = "PROACTIVE"
    minimal_action               = "REPLACE"
    instance_redistribution_type = "NONE"
    max_surge_fixed              = length(var.zones)
    max_unavailable_fixed        = 0
  }
}

resource "google_compute_firewall" "serve" {
  name          = "${var.name}-serve"
  project       = var.project
  network       = var.network
  direction     = "INGRESS"
  target_tags   = [local.tag]
  source_ranges = concat(var.gateway_cidrs, ["35.191.0.0/16", "130.211.0.0/22"]) # + Google health checkers
  allow {
    protocol = "tcp"
    ports    = [tostring(var.port)]
  }
  log_config {
    metadata = "INCLUDE_ALL_METADATA"
  }
}
