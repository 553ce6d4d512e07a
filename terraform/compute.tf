# The host: Ubuntu 24.04 LTS (ships the SSM agent and snap, for the AWS
# CLI), a fixed network interface with an Elastic IP (present from first
# boot, stable across instance replacement, the MX host address in "eip"
# mode), and a separate gp3 volume for the log that outlives the instance.

data "aws_ami" "ubuntu" {
  most_recent = true
  owners      = ["099720109477"] # Canonical

  filter {
    name   = "name"
    values = ["ubuntu/images/hvm-ssd-gp3/ubuntu-noble-24.04-amd64-server-*"]
  }

  filter {
    name   = "virtualization-type"
    values = ["hvm"]
  }
}

resource "aws_network_interface" "host" {
  subnet_id       = aws_subnet.public[0].id
  security_groups = [aws_security_group.instance.id]

  tags = { Name = var.name }
}

resource "aws_eip" "host" {
  #checkov:skip=CKV2_AWS_19:attached to the instance through its primary network interface (aws_network_interface.host, device_index 0), which checkov does not follow
  domain            = "vpc"
  network_interface = aws_network_interface.host.id

  tags = { Name = var.name }

  depends_on = [aws_internet_gateway.main]
}

resource "aws_instance" "host" {
  ami                  = data.aws_ami.ubuntu.id
  instance_type        = var.instance_type
  iam_instance_profile = aws_iam_instance_profile.instance.name
  key_name             = var.ssh_key_name
  ebs_optimized        = true
  monitoring           = var.detailed_monitoring

  network_interface {
    network_interface_id = aws_network_interface.host.id
    device_index         = 0
  }

  metadata_options {
    http_tokens                 = "required" # IMDSv2 only
    http_put_response_hop_limit = 1
  }

  root_block_device {
    volume_type = "gp3"
    volume_size = var.root_volume_gb
    encrypted   = true
    kms_key_id  = local.kms_key_arn
  }

  user_data = templatefile("${path.module}/user_data.sh.tftpl", {
    region         = var.region
    data_volume_id = aws_ebs_volume.log.id
    artifact_s3    = var.artifact_s3_uri
    ecr_image      = var.ecr_image_tag == "" ? "" : "${aws_ecr_repository.uncorreo.repository_url}:${var.ecr_image_tag}"
    ecr_registry   = split("/", aws_ecr_repository.uncorreo.repository_url)[0]
    mail_domain    = var.mail_domain
    smtp_hostname  = local.mx_host
    sns_topic_arn  = aws_sns_topic.inbound.arn
    unit_file      = file("${path.module}/../ops/uncorreo.service")
  })

  lifecycle {
    # A new AMI release or an edited boot script must not replace a running
    # mail host; roll those out deliberately (taint/replace).
    ignore_changes = [ami, user_data]
  }

  tags = { Name = var.name }
}

# The log: the only state on the host. Encrypted, kept when the instance is
# replaced, protected from `terraform destroy` (remove prevent_destroy on
# purpose to delete it). Snapshot it for backups (see README).
resource "aws_ebs_volume" "log" {
  availability_zone = aws_subnet.public[0].availability_zone
  type              = "gp3"
  size              = var.data_volume_gb
  iops              = var.data_volume_iops
  throughput        = var.data_volume_throughput
  encrypted         = true
  kms_key_id        = local.kms_key_arn

  tags = { Name = "${var.name}-log" }

  lifecycle {
    prevent_destroy = true
  }
}

resource "aws_volume_attachment" "log" {
  device_name = "/dev/sdf"
  volume_id   = aws_ebs_volume.log.id
  instance_id = aws_instance.host.id

  # Let systemd stop uncorreo (graceful flush) via the OS shutdown rather
  # than ripping the volume out from under a running writer.
  stop_instance_before_detaching = true
}
