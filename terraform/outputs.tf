output "instance_id" {
  description = "EC2 instance id (for `aws ssm start-session --target`)."
  value       = aws_instance.host.id
}

output "public_ip" {
  description = "The host's Elastic IP."
  value       = aws_eip.host.public_ip
}

output "alb_dns_name" {
  description = "DNS name of the HTTPS load balancer (api_domain is an alias of it)."
  value       = aws_lb.api.dns_name
}

output "api_url" {
  description = "Base URL of the API."
  value       = "https://${var.api_domain}"
}

output "sns_topic_arn" {
  description = "SNS topic SES publishes to: put it in uncorreo's sns.allowed_topic_arns."
  value       = aws_sns_topic.inbound.arn
}

output "mx_record" {
  description = "The MX record published for mail_domain."
  value       = local.mx_value
}

output "smtp_nlb_dns_name" {
  description = "DNS name of the SMTP NLB (smtp_ingress = \"nlb\"), else null."
  value       = local.use_nlb ? aws_lb.smtp[0].dns_name : null
}

output "ecr_repository_url" {
  description = "Push release images here."
  value       = aws_ecr_repository.uncorreo.repository_url
}

output "log_volume_id" {
  description = "EBS volume holding the log (snapshot it for backups)."
  value       = aws_ebs_volume.log.id
}
