# Memorystore for Redis as Meridian's control-plane store when the control
# plane's home is GCP (the example's control_plane_home = "gcp"). Like the
# ElastiCache global datastore it must be the one store every replica in
# every region uses: Meridian's state is one revisioned document set, and
# pub/sub propagation only reaches subscribers of the same server. High
# availability within the region comes from STANDARD_HA; other regions reach
# it privately (interconnect or VPN); replicas are fail-static if it is
# unreachable.

resource "google_redis_instance" "control_plane" {
  name                    = var.name
  project                 = var.project
  region                  = var.region
  tier                    = "STANDARD_HA"
  memory_size_gb          = var.memory_size_gb
  redis_version           = "REDIS_7_2"
  authorized_network      = var.network
  connect_mode            = "PRIVATE_SERVICE_ACCESS"
  auth_enabled            = true
  transit_encryption_mode = "SERVER_AUTHENTICATION"
  customer_managed_key    = var.kms_key_name
  labels                  = var.labels

  persistence_config {
    persistence_mode    = "RDB"
    rdb_snapshot_period = "ONE_HOUR"
  }

  maintenance_policy {
    weekly_maintenance_window {
      day = "SUNDAY"
      start_time {
        hours   = 3
        minutes = 0
      }
    }
  }
}
