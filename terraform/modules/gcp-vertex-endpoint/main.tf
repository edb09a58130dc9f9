# A regional Vertex AI endpoint. The model (a Model Garden vLLM or a custom
# container) is deployed to it by the model team's pipeline
# (gcloud ai endpoints deploy-model), which owns the traffic split between
# deployed models; Meridian calls the endpoint's OpenAI-compatible route (or
# :streamRawPredict) on its dedicated DNS name
# ({endpoint_id}.{region}-{project_number}.prediction.vertexai.goog): the shared
# regional host does not stream, and refuses a dedicated endpoint.

resource "google_vertex_ai_endpoint" "endpoint" {
  #checkov:skip=CKV2_GCP_33:Gateways in both clouds call the regional aiplatform host with OAuth (IAM: roles/aiplatform.user on their service accounts); a private endpoint would be unreachable from AWS and lacks the OpenAI-compatible route.
  name         = var.endpoint_id
  display_name = var.display_name
  description  = "Meridian backend (${var.display_name})"
  project      = var.project
  location     = var.region
  region       = var.region
  labels       = var.labels

  dedicated_endpoint_enabled = true

  dynamic "encryption_spec" {
    for_each = var.kms_key_name == null ? [] : [var.kms_key_name]
    content {
      kms_key_name = encryption_spec.value
    }
  }
}
