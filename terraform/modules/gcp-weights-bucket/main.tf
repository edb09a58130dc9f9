# One GCP region's model-weights bucket. Meridian replicates weights between
# regions and clouds itself and verifies them before routing (see
# aws-weights-bucket), so the bucket only needs to be private, versioned and
# local to its region.

resource "google_storage_bucket" "weights" {
  name                        = var.name
  project                     = var.project
  location                    = upper(var.region)
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false
  labels                      = var.labels

  versioning {
    enabled = true
  }

  logging {
    log_bucket        = var.log_bucket
    log_object_prefix = "gcs/${var.name}"
  }

  dynamic "encryption" {
    for_each = var.kms_key_name == null ? [] : [var.kms_key_name]
    content {
      default_kms_key_name = encryption.value
    }
  }

  lifecycle_rule {
    action {
      type = "AbortIncompleteMultipartUpload"
    }
    condition {
      age = 7
    }
  }

  lifecycle_rule {
    action {
      type = "Delete"
    }
    condition {
      days_since_noncurrent_time = var.noncurrent_version_days
      with_state                 = "ARCHIVED"
    }
  }
}
