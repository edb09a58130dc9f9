# The control-plane Redis shared by every gateway replica: an ElastiCache
# global datastore. The primary region's replication group is the only
# writable one, so every replica (all regions, both clouds) connects to the
# primary endpoint; the secondary keeps a replica one second behind and is
# promoted if the primary region is lost (docs/deploy.md). Meridian is
# fail-static, so replicas keep serving while the store is unreachable.

data "aws_caller_identity" "primary" {
  provider = aws.primary
}

data "aws_iam_policy_document" "key" {
  #checkov:skip=CKV_AWS_109,CKV_AWS_111,CKV_AWS_356:A key policy's "*" resource is the key itself; delegating to the account root is the AWS default key policy.
  statement {
    sid       = "AccountAdministers"
    actions   = ["kms:*"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = ["arn:aws:iam::${data.aws_caller_identity.primary.account_id}:root"]
    }
  }
}

resource "aws_kms_key" "primary" {
  provider                = aws.primary
  description             = "${var.name} control-plane Redis"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.key.json
  tags                    = var.tags
}

resource "aws_kms_key" "secondary" {
  provider                = aws.secondary
  description             = "${var.name} control-plane Redis"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.key.json
  tags                    = var.tags
}

resource "aws_security_group" "primary" {
  provider    = aws.primary
  name        = "${var.name}-redis"
  description = "Meridian control-plane Redis (primary)"
  vpc_id      = var.primary.vpc_id
  tags        = var.tags
}

resource "aws_vpc_security_group_ingress_rule" "primary" {
  provider          = aws.primary
  for_each          = toset(var.primary.client_cidrs)
  security_group_id = aws_security_group.primary.id
  description       = "Meridian gateways"
  cidr_ipv4         = each.value
  ip_protocol       = "tcp"
  from_port         = 6379
  to_port           = 6379
}

resource "aws_security_group" "secondary" {
  provider    = aws.secondary
  name        = "${var.name}-redis"
  description = "Meridian control-plane Redis (secondary)"
  vpc_id      = var.secondary.vpc_id
  tags        = var.tags
}

resource "aws_vpc_security_group_ingress_rule" "secondary" {
  provider          = aws.secondary
  for_each          = toset(var.secondary.client_cidrs)
  security_group_id = aws_security_group.secondary.id
  description       = "Meridian gateways"
  cidr_ipv4         = each.value
  ip_protocol       = "tcp"
  from_port         = 6379
  to_port           = 6379
}

resource "aws_elasticache_subnet_group" "primary" {
  provider   = aws.primary
  name       = "${var.name}-primary"
  subnet_ids = var.primary.subnet_ids
  tags       = var.tags
}

resource "aws_elasticache_subnet_group" "secondary" {
  provider   = aws.secondary
  name       = "${var.name}-secondary"
  subnet_ids = var.secondary.subnet_ids
  tags       = var.tags
}

resource "aws_elasticache_replication_group" "primary" {
  provider                   = aws.primary
  replication_group_id       = "${var.name}-primary"
  description                = "Meridian control plane (primary)"
  engine                     = "redis"
  engine_version             = var.engine_version
  node_type                  = var.node_type
  num_cache_clusters         = 2
  automatic_failover_enabled = true
  multi_az_enabled           = true
  subnet_group_name          = aws_elasticache_subnet_group.primary.name
  security_group_ids         = [aws_security_group.primary.id]
  at_rest_encryption_enabled = true
  kms_key_id                 = aws_kms_key.primary.arn
  transit_encryption_enabled = true
  auth_token                 = var.auth_token
  snapshot_retention_limit   = 7
  auto_minor_version_upgrade = true
  tags                       = var.tags
}

resource "aws_elasticache_global_replication_group" "control_plane" {
  provider                             = aws.primary
  global_replication_group_id_suffix   = var.name
  primary_replication_group_id         = aws_elasticache_replication_group.primary.id
  global_replication_group_description = "Meridian control plane shared by every region"
}

resource "aws_elasticache_replication_group" "secondary" {
  provider                    = aws.secondary
  replication_group_id        = "${var.name}-secondary"
  description                 = "Meridian control plane (secondary, promotable)"
  global_replication_group_id = aws_elasticache_global_replication_group.control_plane.global_replication_group_id
  num_cache_clusters          = 2
  automatic_failover_enabled  = true
  multi_az_enabled            = true
  subnet_group_name           = aws_elasticache_subnet_group.secondary.name
  security_group_ids          = [aws_security_group.secondary.id]
  at_rest_encryption_enabled  = true
  kms_key_id                  = aws_kms_key.secondary.arn
  transit_encryption_enabled  = true
  auth_token                  = var.auth_token
  snapshot_retention_limit    = 7
  auto_minor_version_upgrade  = true
  tags                        = var.tags
}
