# Terraform: the ECS RAM role slsfwd runs with, allowed to do one thing: PutLogs into its logstores.
#
# The image built by ../packer/slsfwd.pkr.hcl has `ecs_ram_role = "<role_name>"` in
# /etc/slsfwd/slsfwd.toml and no AccessKey. An instance created with `role_name` below gets
# short-lived STS credentials for this role from the metadata service, which slsfwd fetches
# and refreshes itself. Nothing here is secret; the provider reads its own credentials from
# ALICLOUD_ACCESS_KEY / ALICLOUD_SECRET_KEY (or a profile) on the machine that runs Terraform.
#
#   terraform apply -var sls_project=my-project -var sls_logstore=my-logstore \
#                   [-var 'routed_logstores=["nginx-store"]'] \
#                   [-var image_id=<the Packer image> -var vswitch_id=... -var security_group_id=...]
#
# logstore_index.tf, beside this file, indexes those logstores.

terraform {
  required_providers {
    alicloud = {
      source  = "aliyun/alicloud"
      version = ">= 1.252.0" # alicloud_ram_role's role_name and assume_role_policy_document
    }
  }
}

variable "region" {
  type    = string
  default = "cn-hangzhou"
}

variable "sls_project" {
  type        = string
  description = "The SLS project slsfwd writes to (sls.project)."
}

variable "sls_logstore" {
  type        = string
  description = "The logstore slsfwd writes to (sls.logstore)."
}

variable "routed_logstores" {
  type        = list(string)
  default     = []
  description = "The logstore of each [[routes]] entry, in sls_project: the role may write to them, and each gets the index (logstore_index.tf)."
}

variable "role_name" {
  type        = string
  default     = "slsfwd-ecs"
  description = "The RAM role's name; the Packer template's ecs_ram_role must be the same."
}

# The instance is optional: leave image_id empty to create only the role and its policy,
# and set role_name on instances defined elsewhere.
variable "image_id" {
  type        = string
  default     = ""
  description = "The image built by Packer; empty: no instance is created here."
}

variable "instance_type" {
  type    = string
  default = "ecs.t6-c1m1.large"
}

variable "vswitch_id" {
  type    = string
  default = ""
}

variable "security_group_id" {
  type    = string
  default = ""
}

provider "alicloud" {
  region = var.region
}

# Who may assume the role: the ECS service, on behalf of the instances the role is attached to.
resource "alicloud_ram_role" "slsfwd" {
  role_name   = var.role_name
  description = "slsfwd on ECS: write logs to ${var.sls_project}/${var.sls_logstore}"
  assume_role_policy_document = jsonencode({
    Version = "1"
    Statement = [{
      Effect    = "Allow"
      Action    = "sts:AssumeRole"
      Principal = { Service = ["ecs.aliyuncs.com"] }
    }]
  })
}

# What the role may do: PutLogs (RAM action log:PostLogStoreLogs) into sls_logstore and the
# routed logstores. No read, no other logstore or project, no management actions.
resource "alicloud_ram_policy" "slsfwd_put_logs" {
  policy_name = "${var.role_name}-put-logs"
  description = "slsfwd: PutLogs into ${var.sls_project}/${var.sls_logstore} and its routed logstores only"
  policy_document = jsonencode({
    Version = "1"
    Statement = [{
      Effect   = "Allow"
      Action   = ["log:PostLogStoreLogs"]
      Resource = [for logstore in concat([var.sls_logstore], var.routed_logstores) : "acs:log:*:*:project/${var.sls_project}/logstore/${logstore}"]
    }]
  })
}

resource "alicloud_ram_role_policy_attachment" "slsfwd_put_logs" {
  role_name   = alicloud_ram_role.slsfwd.role_name
  policy_name = alicloud_ram_policy.slsfwd_put_logs.policy_name
  policy_type = "Custom"
}

# How an instance gets the role: `role_name` on alicloud_instance (one role per instance).
resource "alicloud_instance" "slsfwd" {
  count           = var.image_id == "" ? 0 : 1
  instance_name   = "slsfwd"
  image_id        = var.image_id
  instance_type   = var.instance_type
  vswitch_id      = var.vswitch_id
  security_groups = [var.security_group_id]
  role_name       = alicloud_ram_role.slsfwd.role_name
  # The instance must not start before the role can write: slsfwd would only retry, but the
  # first minutes of logs would wait in its spool.
  depends_on = [alicloud_ram_role_policy_attachment.slsfwd_put_logs]
}

output "role_name" {
  value       = alicloud_ram_role.slsfwd.role_name
  description = "Put this in sls.ecs_ram_role (the Packer template's var.ecs_ram_role)."
}
