# -- GCP ------------------------------------------------------------------------

module "gcp_weights_us" {
  source     = "../../modules/gcp-weights-bucket"
  name       = "${var.name}-weights-us-central1"
  project    = var.gcp_project
  region     = "us-central1"
  log_bucket = var.log_buckets.gcp
  labels     = local.labels
}

module "gcp_weights_eu" {
  source     = "../../modules/gcp-weights-bucket"
  name       = "${var.name}-weights-europe-west4"
  project    = var.gcp_project
  region     = "europe-west4"
  log_bucket = var.log_buckets.gcp
  labels     = local.labels
}

module "gcp_gateway_us" {
  source                           = "../../modules/gcp-gateway-region"
  name                             = "${var.name}-us-central1"
  project                          = var.gcp_project
  region                           = "us-central1"
  image                            = var.image.gcp
  config_yaml                      = module.meridian_config.cloud_run_yaml["gcp:us-central1"]
  grpc_config_yaml                 = module.meridian_config.cloud_run_grpc_yaml["gcp:us-central1"]
  secret_ids                       = var.gcp_secret_ids
  network                          = var.gcp_network
  subnetwork                       = var.gcp_regions["us-central1"].subnetwork
  proxy_subnet_cidr                = var.gcp_regions["us-central1"].proxy_subnet_cidr
  certificate_manager_certificates = var.gcp_regions["us-central1"].certificates
  weights_bucket                   = module.gcp_weights_us.bucket
  labels                           = local.labels
}

module "gcp_gateway_eu" {
  source                           = "../../modules/gcp-gateway-region"
  name                             = "${var.name}-europe-west4"
  project                          = var.gcp_project
  region                           = "europe-west4"
  image                            = var.image.gcp
  config_yaml                      = module.meridian_config.cloud_run_yaml["gcp:europe-west4"]
  grpc_config_yaml                 = module.meridian_config.cloud_run_grpc_yaml["gcp:europe-west4"]
  secret_ids                       = var.gcp_secret_ids
  network                          = var.gcp_network
  subnetwork                       = var.gcp_regions["europe-west4"].subnetwork
  proxy_subnet_cidr                = var.gcp_regions["europe-west4"].proxy_subnet_cidr
  certificate_manager_certificates = var.gcp_regions["europe-west4"].certificates
  weights_bucket                   = module.gcp_weights_eu.bucket
  labels                           = local.labels
}

module "gpu_pool_us" {
  source           = "../../modules/gcp-gpu-pool"
  name             = "${var.name}-llama-8b"
  project          = var.gcp_project
  region           = "us-central1"
  zones            = ["us-central1-a", "us-central1-b"]
  network          = var.gcp_network
  subnetwork       = var.gcp_regions["us-central1"].subnetwork
  gateway_cidrs    = local.gateway_cidrs
  model            = local.model
  version_name     = "v1"
  served_model     = local.served_model
  weights_uri      = "${module.gcp_weights_us.url}/${local.model}/v1"
  discovery_labels = local.discovery_labels
  labels           = local.labels
}

module "vertex_eu" {
  source       = "../../modules/gcp-vertex-endpoint"
  endpoint_id  = "4242424242"
  display_name = "${var.name}-llama-8b-europe-west4"
  project      = var.gcp_project
  region       = "europe-west4"
  labels       = local.labels
}

module "memorystore" {
  source  = "../../modules/gcp-redis"
  count   = var.control_plane_home == "gcp" ? 1 : 0
  name    = "${var.name}-control-plane"
  project = var.gcp_project
  region  = "us-central1"
  network = var.gcp_network
  labels  = local.labels
}
