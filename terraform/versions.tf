terraform {
  required_version = ">= 1.5.0"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.0"
    }
  }
}

provider "aws" {
  region = var.region

  default_tags {
    tags = merge({ Project = var.name, ManagedBy = "terraform" }, var.tags)
  }
}

data "aws_caller_identity" "current" {}

# Pinned by name: the subnets (and the log volume, which must stay in the
# host's zone) never move when AWS adds a zone to the region.
data "aws_availability_zones" "available" {
  state = "available"

  filter {
    name   = "zone-name"
    values = length(var.availability_zones) > 0 ? var.availability_zones : ["${var.region}a", "${var.region}b"]
  }
}
