variable "name" {
  description = "Name prefix for every resource."
  type        = string
  default     = "uncorreo"
}

variable "region" {
  description = "AWS region. With mx_target = \"ses\" it must be one where SES email receiving is offered (e.g. us-east-1, us-west-2, eu-west-1)."
  type        = string
  default     = "eu-west-1"
}

variable "tags" {
  description = "Extra tags for every resource."
  type        = map(string)
  default     = {}
}

variable "route53_zone_name" {
  description = "Existing public Route 53 hosted zone holding mail_domain and api_domain (e.g. \"example.com\")."
  type        = string
}

variable "mail_domain" {
  description = "Domain the inboxes live under (MX, SPF, SES identity, DKIM). Must also be in [engine] domains."
  type        = string
}

variable "api_domain" {
  description = "Host name of the HTTPS API / web UI behind the ALB (ACM certificate, SNS webhook)."
  type        = string
}

variable "mx_target" {
  description = "Who receives mail for mail_domain: \"ses\" (MX -> SES inbound, SES -> SNS -> our webhook) or \"self\" (MX -> our own SMTP on port 25)."
  type        = string
  default     = "self"

  validation {
    condition     = contains(["ses", "self"], var.mx_target)
    error_message = "mx_target must be \"ses\" or \"self\"."
  }
}

variable "smtp_ingress" {
  description = "How port 25 reaches the host when mx_target = \"self\": \"eip\" (MX host record -> the instance's Elastic IP) or \"nlb\" (MX host record -> a Network Load Balancer)."
  type        = string
  default     = "eip"

  validation {
    condition     = contains(["eip", "nlb"], var.smtp_ingress)
    error_message = "smtp_ingress must be \"eip\" or \"nlb\"."
  }
}

variable "spf_record" {
  description = "SPF TXT value for mail_domain. Inboxes never send; keep amazonses.com only if you send through SES."
  type        = string
  default     = "v=spf1 include:amazonses.com -all"
}

variable "vpc_cidr" {
  description = "CIDR of the VPC; two /24 public subnets are carved from it."
  type        = string
  default     = "10.42.0.0/16"
}

variable "instance_type" {
  description = "EC2 instance type. The appliance runs one thread per vCPU."
  type        = string
  default     = "t3.medium"
}

variable "root_volume_gb" {
  description = "Root volume size (OS, binary, journal). The log lives on its own volume."
  type        = number
  default     = 16
}

variable "data_volume_gb" {
  description = "Size of the gp3 EBS volume holding the log (/var/lib/uncorreo). Can be grown online later."
  type        = number
  default     = 50
}

variable "data_volume_iops" {
  description = "Provisioned IOPS of the log volume (gp3: 3000 included). Group commit needs few IOPS; raise if commit p99 is high."
  type        = number
  default     = 3000
}

variable "data_volume_throughput" {
  description = "Provisioned throughput of the log volume in MiB/s (gp3: 125 included)."
  type        = number
  default     = 125
}

variable "ssh_cidrs" {
  description = "CIDRs allowed to SSH (port 22). Empty = no SSH; use SSM Session Manager instead."
  type        = list(string)
  default     = []
}

variable "ssh_key_name" {
  description = "Existing EC2 key pair name for SSH, or null."
  type        = string
  default     = null
}

variable "metrics_cidrs" {
  description = "CIDRs of Prometheus servers allowed to scrape :8080/metrics and node_exporter :9100 directly (the ALB refuses /metrics)."
  type        = list(string)
  default     = []
}

variable "artifact_s3_uri" {
  description = "s3:// URI of the uncorreo binary (linux x86_64) installed at first boot. Empty = take it from the ECR image ecr_image_tag instead."
  type        = string
  default     = ""
}

variable "ecr_image_tag" {
  description = "Tag of an image in the created ECR repository holding /usr/local/bin/uncorreo; used when artifact_s3_uri is empty. Empty too = install the binary by hand."
  type        = string
  default     = ""
}

variable "ses_webhook_subscribe" {
  description = "Subscribe https://<api_domain>/api/v1/ses/inbound to the SNS topic (mx_target = \"ses\"). Needs uncorreo running behind the ALB during apply; set false on a first apply without a binary."
  type        = bool
  default     = true
}

variable "enable_cloudwatch_agent" {
  description = "Attach CloudWatchAgentServerPolicy to the instance role (the agent itself is not installed here)."
  type        = bool
  default     = false
}

variable "availability_zones" {
  description = "The two Availability Zones for the subnets (the host uses the first). Empty = \"<region>a\" and \"<region>b\"; set it in regions where those names do not exist for your account."
  type        = list(string)
  default     = []

  validation {
    condition     = length(var.availability_zones) == 0 || length(var.availability_zones) == 2
    error_message = "availability_zones takes exactly two zone names (or none for the default)."
  }
}

variable "kms_key_arn" {
  description = "ARN of an existing customer-managed KMS key for the log volume, the root volume, ECR, SNS and the CloudWatch log groups. Empty = this module creates one (with rotation)."
  type        = string
  default     = ""
}

variable "enable_waf" {
  description = "Put an AWS WAF web ACL (AWS managed common + known-bad-inputs rules, logged to CloudWatch) in front of the ALB. ~USD 6/month + requests."
  type        = bool
  default     = true
}

variable "enable_flow_logs" {
  description = "Send VPC flow logs (all traffic) to a KMS-encrypted CloudWatch log group."
  type        = bool
  default     = true
}

variable "log_retention_days" {
  description = "Retention of the flow-log and WAF log groups."
  type        = number
  default     = 365
}

variable "lb_access_logs_bucket" {
  description = "Existing S3 bucket (with the ELB log-delivery bucket policy) for ALB/NLB access logs. Empty = no access logs."
  type        = string
  default     = ""
}

variable "lb_deletion_protection" {
  description = "Deletion protection on the load balancers (turn off before a deliberate `terraform destroy`)."
  type        = bool
  default     = true
}

variable "detailed_monitoring" {
  description = "1-minute CloudWatch metrics for the instance (~USD 2/month)."
  type        = bool
  default     = true
}
