# The gateways' meridian.yaml, rendered from the resources above: regions and
# their jurisdiction tags, the SageMaker variants and the Vertex endpoint as
# backends, and discovery of the GPU pool by the labels its template sets.
# tests/terraform renders this block offline and validates the YAML with
# gateway.config.model.parse, so a change here that Meridian would reject fails CI.

module "meridian_config" {
  source  = "../../modules/meridian-config"
  regions = local.regions
  models  = local.models
  sagemaker_backends = [
    {
      name          = "sagemaker-us-east-1-blue"
      model         = local.model
      version       = "v1"
      aws_region    = "us-east-1"
      endpoint_name = module.sagemaker_us.endpoint_name
      variant       = "blue"
      container     = "vllm"
      served_model  = local.served_model
      price_input   = 0.3
      price_output  = 0.6
    },
    {
      name          = "sagemaker-us-east-1-green"
      model         = local.model
      version       = "v2"
      aws_region    = "us-east-1"
      endpoint_name = module.sagemaker_us.endpoint_name
      variant       = "green"
      container     = "vllm"
      served_model  = local.served_model
      price_input   = 0.3
      price_output  = 0.6
    },
  ]
  vertex_backends = [
    {
      name           = "vertex-europe-west4"
      model          = local.model
      version        = "v1"
      project        = var.gcp_project
      project_number = var.gcp_project_number
      location       = "europe-west4"
      endpoint_id    = module.vertex_eu.endpoint_id
      served_model   = local.served_model
      price_input    = 0.5
      price_output   = 1.5
    },
  ]
  gce_discovery = {
    project      = var.gcp_project
    labels       = module.gpu_pool_us.discovery_labels
    port_label   = module.gpu_pool_us.port_label
    accelerators = [module.gpu_pool_us.accelerator_type]
  }
  allowed_networks = [var.gcp_regions["us-central1"].cidr]
  tenants          = var.tenants
  listener_tls     = local.tls_files
  # cost: each region's config names its own region; transfer between regions at
  # about the clouds' inter-region rate, and across clouds at their internet egress
  transfer_per_gb = 0.02
  transfer_pairs  = { "aws->gcp" = 0.09, "gcp->aws" = 0.12 }
}
