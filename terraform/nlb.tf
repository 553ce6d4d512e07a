# Port 25 ingress, smtp_ingress = "nlb" only (and only used when
# mx_target = "self"). A TCP pass-through NLB with instance targets keeps
# the client's source address, so SMTP logs and Received: lines stay true.
# "eip" (the default) sends MX straight to the Elastic IP instead: for one
# host the NLB adds ~USD 16+/month (hours + LCUs) and a hop, and buys only a health-checked
# name you could also get by moving the EIP. Choose "nlb" if you expect to
# add hosts behind the same MX name.

locals {
  use_nlb = var.smtp_ingress == "nlb"
}

resource "aws_lb" "smtp" {
  count = local.use_nlb ? 1 : 0

  name                             = "${var.name}-smtp"
  load_balancer_type               = "network"
  internal                         = false
  subnets                          = aws_subnet.public[*].id
  enable_cross_zone_load_balancing = true
  enable_deletion_protection       = var.lb_deletion_protection

  #checkov:skip=CKV_AWS_91:access logs are opt-in (var.lb_access_logs_bucket), as on the ALB; every SMTP session is logged by uncorreo itself
  access_logs {
    enabled = var.lb_access_logs_bucket != ""
    bucket  = var.lb_access_logs_bucket
    prefix  = "${var.name}-smtp"
  }
}

resource "aws_lb_target_group" "smtp" {
  count = local.use_nlb ? 1 : 0

  name        = "${var.name}-smtp"
  port        = 25
  protocol    = "TCP"
  target_type = "instance"
  vpc_id      = aws_vpc.main.id

  # Long deregistration delay: lets open SMTP sessions finish on a
  # graceful restart of the host.
  deregistration_delay = 120

  health_check {
    protocol            = "TCP"
    port                = "traffic-port"
    interval            = 10
    healthy_threshold   = 2
    unhealthy_threshold = 2
  }
}

resource "aws_lb_target_group_attachment" "smtp" {
  count = local.use_nlb ? 1 : 0

  target_group_arn = aws_lb_target_group.smtp[0].arn
  target_id        = aws_instance.host.id
  port             = 25
}

resource "aws_lb_listener" "smtp" {
  count = local.use_nlb ? 1 : 0

  load_balancer_arn = aws_lb.smtp[0].arn
  port              = 25
  protocol          = "TCP"

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.smtp[0].arn
  }
}
