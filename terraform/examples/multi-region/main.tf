# Meridian in four regions on two clouds:
#
#   aws:us-east-1     gateway (ECS Fargate + ALB), weights bucket, Redis primary,
#                     SageMaker endpoint (variants blue = v1, green = v2)
#   aws:eu-west-1     gateway, weights bucket, Redis secondary
#   gcp:us-central1   gateway (Cloud Run + regional ALB), weights bucket,
#                     self-hosted vLLM GPU pool (MIG, discovered by label)
#   gcp:europe-west4  gateway, weights bucket, Vertex AI endpoint
#
# One public name routes each client to the nearest healthy region (Route 53
# latency records + /readyz health checks). config.tf renders the gateways'
# meridian.yaml from these resources.

locals {
  model        = "llama-3.1-8b-instruct"
  served_model = "meta-llama/Llama-3.1-8B-Instruct"
  tags         = { app = "meridian", deployment = var.name, managed-by = "terraform" }
  labels       = { app = "meridian", deployment = var.name }

  regions = [
    { name = "aws:us-east-1", tags = ["US"] },
    { name = "aws:eu-west-1", tags = ["EU", "IE"] },
    { name = "gcp:us-central1", tags = ["US"] },
    { name = "gcp:europe-west4", tags = ["EU", "NL"] },
  ]
  models = [
    { name = local.model, versions = { v1 = 100, v2 = 0 }, cost_weight = 1 },
  ]
  discovery_labels = { "meridian-role" = "llm-backend", "meridian-pool" = "llama-8b" }

  # Where the AWS tasks write the listener certificate from Secrets Manager, and
  # the paths meridian.yaml's listen.tls names: one value for both.
  tls_files = {
    cert      = "/tmp/tls/cert.pem"
    key       = "/tmp/tls/key.pem"
    client_ca = "/tmp/tls/client-ca.pem"
  }

  gateway_cidrs = concat([for n in values(var.aws_networks) : n.cidr], [for r in values(var.gcp_regions) : r.cidr])
}

# -- AWS ------------------------------------------------------------------------

module "weights_us" {
  source            = "../../modules/aws-weights-bucket"
  providers         = { aws = aws.us_east_1 }
  name              = "${var.name}-weights-us-east-1"
  access_log_bucket = var.log_buckets.aws["us-east-1"]
}

module "weights_eu" {
  source            = "../../modules/aws-weights-bucket"
  providers         = { aws = aws.eu_west_1 }
  name              = "${var.name}-weights-eu-west-1"
  access_log_bucket = var.log_buckets.aws["eu-west-1"]
}

module "redis" {
  source     = "../../modules/aws-redis-global"
  count      = var.control_plane_home == "aws" ? 1 : 0
  providers  = { aws.primary = aws.us_east_1, aws.secondary = aws.eu_west_1 }
  name       = var.name
  auth_token = var.redis_auth_token
  primary = {
    vpc_id       = var.aws_networks["us-east-1"].vpc_id
    subnet_ids   = var.aws_networks["us-east-1"].private_subnet_ids
    client_cidrs = local.gateway_cidrs
  }
  secondary = {
    vpc_id       = var.aws_networks["eu-west-1"].vpc_id
    subnet_ids   = var.aws_networks["eu-west-1"].private_subnet_ids
    client_cidrs = local.gateway_cidrs
  }
}

module "sagemaker_us" {
  source              = "../../modules/aws-sagemaker-endpoint"
  providers           = { aws = aws.us_east_1 }
  endpoint_name       = "${var.name}-llama-8b"
  model               = local.model
  served_model        = local.served_model
  container           = "vllm"
  weights_bucket_arn  = module.weights_us.arn
  weights_kms_key_arn = module.weights_us.kms_key_arn
  vpc_id              = var.aws_networks["us-east-1"].vpc_id
  subnet_ids          = var.aws_networks["us-east-1"].private_subnet_ids
  variants = [
    {
      name           = "blue"
      version        = "v1"
      image          = "763104351884.dkr.ecr.us-east-1.amazonaws.com/djl-inference:0.31.0-lmi13.0.0-cu124"
      weights_s3_uri = "s3://${var.name}-weights-us-east-1/${local.model}/v1/"
      weight         = 1
    },
    {
      name           = "green"
      version        = "v2"
      image          = "763104351884.dkr.ecr.us-east-1.amazonaws.com/djl-inference:0.31.0-lmi13.0.0-cu124"
      weights_s3_uri = "s3://${var.name}-weights-us-east-1/${local.model}/v2/"
      weight         = 1
    },
  ]
}

module "gateway_us" {
  source                  = "../../modules/aws-gateway-region"
  providers               = { aws = aws.us_east_1 }
  name                    = "${var.name}-us-east-1"
  image                   = var.image.aws
  config_yaml             = module.meridian_config.yaml["aws:us-east-1"]
  secret_arns             = var.aws_networks["us-east-1"].secret_arns
  vpc_id                  = var.aws_networks["us-east-1"].vpc_id
  public_subnet_ids       = var.aws_networks["us-east-1"].public_subnet_ids
  private_subnet_ids      = var.aws_networks["us-east-1"].private_subnet_ids
  certificate_arn         = var.aws_networks["us-east-1"].certificate_arn
  access_logs_bucket      = var.aws_networks["us-east-1"].access_logs_bucket
  redis_cidrs             = [var.aws_networks["us-east-1"].cidr]
  backend_cidrs           = [var.gcp_regions["us-central1"].cidr]
  weights_bucket_arns     = [module.weights_us.arn, module.weights_eu.arn]
  kms_key_arns            = [module.weights_us.kms_key_arn, module.weights_eu.kms_key_arn]
  sagemaker_endpoint_arns = [module.sagemaker_us.endpoint_arn]
  listener_tls = {
    cert_secret_arn      = var.aws_networks["us-east-1"].listener_tls.cert_secret_arn
    key_secret_arn       = var.aws_networks["us-east-1"].listener_tls.key_secret_arn
    client_ca_secret_arn = var.aws_networks["us-east-1"].listener_tls.client_ca_secret_arn
    files                = local.tls_files
  }
}

module "gateway_eu" {
  source              = "../../modules/aws-gateway-region"
  providers           = { aws = aws.eu_west_1 }
  name                = "${var.name}-eu-west-1"
  image               = var.image.aws
  config_yaml         = module.meridian_config.yaml["aws:eu-west-1"]
  secret_arns         = var.aws_networks["eu-west-1"].secret_arns
  vpc_id              = var.aws_networks["eu-west-1"].vpc_id
  public_subnet_ids   = var.aws_networks["eu-west-1"].public_subnet_ids
  private_subnet_ids  = var.aws_networks["eu-west-1"].private_subnet_ids
  certificate_arn     = var.aws_networks["eu-west-1"].certificate_arn
  access_logs_bucket  = var.aws_networks["eu-west-1"].access_logs_bucket
  redis_cidrs         = [var.aws_networks["us-east-1"].cidr]
  backend_cidrs       = [var.gcp_regions["us-central1"].cidr]
  weights_bucket_arns = [module.weights_us.arn, module.weights_eu.arn]
  kms_key_arns        = [module.weights_us.kms_key_arn, module.weights_eu.kms_key_arn]
  listener_tls = {
    cert_secret_arn      = var.aws_networks["eu-west-1"].listener_tls.cert_secret_arn
    key_secret_arn       = var.aws_networks["eu-west-1"].listener_tls.key_secret_arn
    client_ca_secret_arn = var.aws_networks["eu-west-1"].listener_tls.client_ca_secret_arn
    files                = local.tls_files
  }
}

module "global_entry" {
  source      = "../../modules/aws-global-entry"
  providers   = { aws = aws.us_east_1 }
  zone_id     = var.public_name.zone_id
  record_name = var.public_name.record
  entries = [
    {
      id             = "aws-us-east-1"
      latency_region = "us-east-1"
      alias          = { dns_name = module.gateway_us.alb_dns_name, zone_id = module.gateway_us.alb_zone_id }
      health_fqdn    = module.gateway_us.alb_dns_name
    },
    {
      id             = "aws-eu-west-1"
      latency_region = "eu-west-1"
      alias          = { dns_name = module.gateway_eu.alb_dns_name, zone_id = module.gateway_eu.alb_zone_id }
      health_fqdn    = module.gateway_eu.alb_dns_name
    },
    {
      id             = "gcp-us-central1"
      latency_region = "us-east-2" # nearest AWS region to Iowa
      ip             = module.gcp_gateway_us.ip_address
      health_ip      = module.gcp_gateway_us.ip_address
    },
    {
      id             = "gcp-europe-west4"
      latency_region = "eu-central-1" # nearest AWS region to the Netherlands not already used
      ip             = module.gcp_gateway_eu.ip_address
      health_ip      = module.gcp_gateway_eu.ip_address
    },
  ]
}

# gRPC's own name: on AWS the network load balancers passing TLS through to the
# gateways (mTLS identities), on GCP the regional load balancers (gRPC paths to
# the h2c service). Health is each region's /readyz on its HTTP entry.
module "grpc_entry" {
  source      = "../../modules/aws-global-entry"
  providers   = { aws = aws.us_east_1 }
  zone_id     = var.public_name.zone_id
  record_name = var.public_name.grpc_record
  entries = [
    {
      id             = "grpc-aws-us-east-1"
      latency_region = "us-east-1"
      alias          = { dns_name = module.gateway_us.grpc_dns_name, zone_id = module.gateway_us.grpc_zone_id }
      health_fqdn    = module.gateway_us.alb_dns_name
    },
    {
      id             = "grpc-aws-eu-west-1"
      latency_region = "eu-west-1"
      alias          = { dns_name = module.gateway_eu.grpc_dns_name, zone_id = module.gateway_eu.grpc_zone_id }
      health_fqdn    = module.gateway_eu.alb_dns_name
    },
    {
      id             = "grpc-gcp-us-central1"
      latency_region = "us-east-2"
      ip             = module.gcp_gateway_us.ip_address
      health_ip      = module.gcp_gateway_us.ip_address
    },
    {
      id             = "grpc-gcp-europe-west4"
      latency_region = "eu-central-1"
      ip             = module.gcp_gateway_eu.ip_address
      health_ip      = module.gcp_gateway_eu.ip_address
    },
  ]
}
