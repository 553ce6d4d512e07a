# Route 53: API name -> ALB; MX for mail_domain -> SES inbound or our host;
# SPF TXT. (SES verification TXT and DKIM CNAMEs are in ses.tf, the
# certificate validation records in alb.tf.)

data "aws_route53_zone" "main" {
  name         = var.route53_zone_name
  private_zone = false
}

locals {
  # The name our own SMTP answers as and MX points to in "self" mode.
  mx_host = "mx.${var.mail_domain}"
  mx_value = (
    var.mx_target == "ses"
    ? "10 inbound-smtp.${var.region}.amazonaws.com"
    : "10 ${local.mx_host}"
  )
}

resource "aws_route53_record" "api" {
  zone_id = data.aws_route53_zone.main.zone_id
  name    = var.api_domain
  type    = "A"

  alias {
    name                   = aws_lb.api.dns_name
    zone_id                = aws_lb.api.zone_id
    evaluate_target_health = true
  }
}

# mx.<mail_domain>: the Elastic IP, or the NLB. Exists in both MX modes
# (SMTP on the host is reachable either way; handy for tests).
resource "aws_route53_record" "mx_host_eip" {
  count = local.use_nlb ? 0 : 1

  zone_id = data.aws_route53_zone.main.zone_id
  name    = local.mx_host
  type    = "A"
  ttl     = 300
  records = [aws_eip.host.public_ip]
}

resource "aws_route53_record" "mx_host_nlb" {
  count = local.use_nlb ? 1 : 0

  zone_id = data.aws_route53_zone.main.zone_id
  name    = local.mx_host
  type    = "A"

  alias {
    name                   = aws_lb.smtp[0].dns_name
    zone_id                = aws_lb.smtp[0].zone_id
    evaluate_target_health = false
  }
}

resource "aws_route53_record" "mx" {
  zone_id = data.aws_route53_zone.main.zone_id
  name    = var.mail_domain
  type    = "MX"
  ttl     = 300
  records = [local.mx_value]
}

resource "aws_route53_record" "spf" {
  zone_id = data.aws_route53_zone.main.zone_id
  name    = var.mail_domain
  type    = "TXT"
  ttl     = 600
  records = [var.spf_record]
}
