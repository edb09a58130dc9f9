terraform {
  required_version = ">= 1.5"
  # google >= 6.13: dedicated_endpoint_enabled on google_vertex_ai_endpoint
  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 6.13, < 8.0"
    }
  }
}
