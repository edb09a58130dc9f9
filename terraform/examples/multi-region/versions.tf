terraform {
  required_version = ">= 1.5"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.60, < 7.0"
    }
    google = {
      source  = "hashicorp/google"
      version = ">= 6.0, < 8.0"
    }
  }
  # Keep state in an encrypted remote backend: it holds the Redis AUTH token.
  # backend "s3" { bucket = "...", key = "meridian/multi-region.tfstate", region = "us-east-1", encrypt = true, use_lockfile = true }
}

provider "aws" {
  alias  = "us_east_1"
  region = "us-east-1"
  default_tags {
    tags = local.tags
  }
}

provider "aws" {
  alias  = "eu_west_1"
  region = "eu-west-1"
  default_tags {
    tags = local.tags
  }
}

provider "google" {
  project = var.gcp_project
}
