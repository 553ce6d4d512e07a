# SES: domain identity (verification TXT) and Easy DKIM (3 CNAMEs) always;
# with mx_target = "ses" also a receipt rule set whose rule publishes each
# message to SNS (BASE64-encoded raw MIME), and an HTTPS subscription of
# uncorreo's webhook to that topic.
#
# Caveats (see README): SES's SNS action carries messages up to 150 KB only
# (bigger ones bounce); only ONE receipt rule set can be active per account
# and region, and this module makes its own the active one.

resource "aws_ses_domain_identity" "mail" {
  domain = var.mail_domain
}

resource "aws_route53_record" "ses_verification" {
  zone_id = data.aws_route53_zone.main.zone_id
  name    = "_amazonses.${var.mail_domain}"
  type    = "TXT"
  ttl     = 600
  records = [aws_ses_domain_identity.mail.verification_token]
}

resource "aws_ses_domain_identity_verification" "mail" {
  domain     = aws_ses_domain_identity.mail.id
  depends_on = [aws_route53_record.ses_verification]
}

resource "aws_ses_domain_dkim" "mail" {
  domain = aws_ses_domain_identity.mail.domain
}

resource "aws_route53_record" "dkim" {
  count = 3

  zone_id = data.aws_route53_zone.main.zone_id
  name    = "${aws_ses_domain_dkim.mail.dkim_tokens[count.index]}._domainkey.${var.mail_domain}"
  type    = "CNAME"
  ttl     = 600
  records = ["${aws_ses_domain_dkim.mail.dkim_tokens[count.index]}.dkim.amazonses.com"]
}

# The topic exists in both modes so its ARN can sit in uncorreo's
# sns.allowed_topic_arns from day one.
resource "aws_sns_topic" "inbound" {
  name              = "${var.name}-inbound"
  kms_master_key_id = local.kms_key_arn
}

locals {
  use_ses       = var.mx_target == "ses"
  rule_set_name = "${var.name}-inbound"
  rule_name     = "${var.name}-to-sns"
}

data "aws_iam_policy_document" "sns_from_ses" {
  statement {
    sid       = "AllowSESPublish"
    actions   = ["SNS:Publish"]
    resources = [aws_sns_topic.inbound.arn]

    principals {
      type        = "Service"
      identifiers = ["ses.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "AWS:SourceAccount"
      values   = [data.aws_caller_identity.current.account_id]
    }

    condition {
      test     = "ArnLike"
      variable = "AWS:SourceArn"
      values   = ["arn:aws:ses:${var.region}:${data.aws_caller_identity.current.account_id}:receipt-rule-set/${local.rule_set_name}:receipt-rule/${local.rule_name}"]
    }
  }
}

resource "aws_sns_topic_policy" "inbound" {
  arn    = aws_sns_topic.inbound.arn
  policy = data.aws_iam_policy_document.sns_from_ses.json
}

resource "aws_ses_receipt_rule_set" "inbound" {
  count = local.use_ses ? 1 : 0

  rule_set_name = local.rule_set_name
}

resource "aws_ses_active_receipt_rule_set" "inbound" {
  count = local.use_ses ? 1 : 0

  rule_set_name = aws_ses_receipt_rule_set.inbound[0].rule_set_name
}

resource "aws_ses_receipt_rule" "to_sns" {
  count = local.use_ses ? 1 : 0

  name          = local.rule_name
  rule_set_name = aws_ses_receipt_rule_set.inbound[0].rule_set_name
  recipients    = [var.mail_domain]
  enabled       = true
  scan_enabled  = true
  tls_policy    = "Optional"

  sns_action {
    topic_arn = aws_sns_topic.inbound.arn
    encoding  = "Base64"
    position  = 1
  }

  # SES test-publishes to the topic when the rule is created.
  depends_on = [aws_sns_topic_policy.inbound, aws_ses_domain_identity_verification.mail]
}

# uncorreo confirms the subscription itself (for topics listed in
# sns.allowed_topic_arns), so the host must be serving behind the ALB
# while this is applied.
resource "aws_sns_topic_subscription" "webhook" {
  count = local.use_ses && var.ses_webhook_subscribe ? 1 : 0

  topic_arn                       = aws_sns_topic.inbound.arn
  protocol                        = "https"
  endpoint                        = "https://${var.api_domain}/api/v1/ses/inbound"
  endpoint_auto_confirms          = true
  confirmation_timeout_in_minutes = 10

  depends_on = [
    aws_lb_listener.https,
    aws_lb_target_group_attachment.api,
    aws_route53_record.api,
  ]
}
