# Instance: 25 from anywhere (MX; the NLB keeps client addresses, so the
# same rule serves both ingress modes), 8080 only from the ALB (plus
# 8080/9100 from optional Prometheus CIDRs), 22 only from var.ssh_cidrs.
# Nothing else in.

resource "aws_security_group" "instance" {
  name        = "${var.name}-instance"
  description = "uncorreo host"
  vpc_id      = aws_vpc.main.id

  tags = { Name = "${var.name}-instance" }
}

resource "aws_vpc_security_group_ingress_rule" "smtp_v4" {
  security_group_id = aws_security_group.instance.id
  description       = "SMTP from the internet"
  ip_protocol       = "tcp"
  from_port         = 25
  to_port           = 25
  cidr_ipv4         = "0.0.0.0/0"
}

resource "aws_vpc_security_group_ingress_rule" "http_from_alb" {
  security_group_id            = aws_security_group.instance.id
  description                  = "HTTP API from the ALB only"
  ip_protocol                  = "tcp"
  from_port                    = 8080
  to_port                      = 8080
  referenced_security_group_id = aws_security_group.alb.id
}

# Prometheus: uncorreo's /metrics on 8080 and node_exporter on 9100.
resource "aws_vpc_security_group_ingress_rule" "metrics" {
  for_each = {
    for pair in setproduct(var.metrics_cidrs, [8080, 9100]) : "${pair[0]}:${pair[1]}" => pair
  }

  security_group_id = aws_security_group.instance.id
  description       = "Prometheus scrape"
  ip_protocol       = "tcp"
  from_port         = each.value[1]
  to_port           = each.value[1]
  cidr_ipv4         = each.value[0]
}

resource "aws_vpc_security_group_ingress_rule" "ssh" {
  for_each = toset(var.ssh_cidrs)

  security_group_id = aws_security_group.instance.id
  description       = "SSH"
  ip_protocol       = "tcp"
  from_port         = 22
  to_port           = 22
  cidr_ipv4         = each.value
}

# Outbound: SNS certificate fetches and subscription confirmation, ECR/S3
# artifact download, SSM, apt.
resource "aws_vpc_security_group_egress_rule" "instance_all" {
  security_group_id = aws_security_group.instance.id
  description       = "All outbound"
  ip_protocol       = "-1"
  cidr_ipv4         = "0.0.0.0/0"
}

# ALB: 80 (redirected) and 443 from anywhere; out only to the instance.

resource "aws_security_group" "alb" {
  name        = "${var.name}-alb"
  description = "uncorreo ALB"
  vpc_id      = aws_vpc.main.id

  tags = { Name = "${var.name}-alb" }
}

resource "aws_vpc_security_group_ingress_rule" "alb" {
  #checkov:skip=CKV_AWS_260:port 80 only answers a 301 redirect to 443 (aws_lb_listener.http_redirect); nothing is served over plain HTTP
  for_each = toset(["80", "443"])

  security_group_id = aws_security_group.alb.id
  description       = "HTTP(S) from the internet"
  ip_protocol       = "tcp"
  from_port         = tonumber(each.value)
  to_port           = tonumber(each.value)
  cidr_ipv4         = "0.0.0.0/0"
}

resource "aws_vpc_security_group_egress_rule" "alb_to_instance" {
  security_group_id            = aws_security_group.alb.id
  description                  = "To the uncorreo HTTP port"
  ip_protocol                  = "tcp"
  from_port                    = 8080
  to_port                      = 8080
  referenced_security_group_id = aws_security_group.instance.id
}
