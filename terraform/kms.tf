# One customer-managed key for everything this module stores encrypted: the
# log and root volumes, ECR images, the SNS topic and the CloudWatch log
# groups. Bring your own with var.kms_key_arn; otherwise it is created here,
# rotated yearly by KMS.

locals {
  create_kms_key = var.kms_key_arn == ""
  kms_key_arn    = local.create_kms_key ? aws_kms_key.main[0].arn : var.kms_key_arn
  account_id     = data.aws_caller_identity.current.account_id
}

data "aws_iam_policy_document" "kms" {
  #checkov:skip=CKV_AWS_111:a key policy's "*" resource is the key itself; write access is limited to this account and to the SES and CloudWatch Logs services
  #checkov:skip=CKV_AWS_356:a key policy's "*" resource is the key itself, nothing else (AWS requires "*" there)
  #checkov:skip=CKV_AWS_109:the default key policy (account root administers; IAM decides who uses it), as AWS recommends, so the key is never locked out
  # The account's IAM policies decide who administers and uses the key (the
  # default key policy); the services below get only what they need.
  statement {
    sid       = "AccountAdministers"
    actions   = ["kms:*"]
    resources = ["*"] # "*" in a key policy means this key
    principals {
      type        = "AWS"
      identifiers = ["arn:aws:iam::${local.account_id}:root"]
    }
  }

  # SES publishes received mail to the encrypted SNS topic.
  statement {
    sid       = "SesPublishesToEncryptedTopic"
    actions   = ["kms:GenerateDataKey*", "kms:Decrypt"]
    resources = ["*"]
    principals {
      type        = "Service"
      identifiers = ["ses.amazonaws.com"]
    }
    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }

  # CloudWatch Logs encrypts the flow-log and WAF log groups.
  statement {
    sid = "CloudWatchLogsEncrypts"
    actions = [
      "kms:Encrypt*",
      "kms:Decrypt*",
      "kms:ReEncrypt*",
      "kms:GenerateDataKey*",
      "kms:Describe*",
    ]
    resources = ["*"]
    principals {
      type        = "Service"
      identifiers = ["logs.${var.region}.amazonaws.com"]
    }
    condition {
      test     = "ArnLike"
      variable = "kms:EncryptionContext:aws:logs:arn"
      values   = ["arn:aws:logs:${var.region}:${local.account_id}:log-group:*"]
    }
  }
}

resource "aws_kms_key" "main" {
  count = local.create_kms_key ? 1 : 0

  description             = "${var.name}: log volume, ECR, SNS, log groups"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.kms.json
}

resource "aws_kms_alias" "main" {
  count = local.create_kms_key ? 1 : 0

  name          = "alias/${var.name}"
  target_key_id = aws_kms_key.main[0].key_id
}
