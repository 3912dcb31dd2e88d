# Packer: an ECS image (Debian 12) with slsfwd in place of Logtail.
#
# This replaces the tutorial's provisioning steps: downloading and running logtail.sh, then
# editing ilogtail_config.json and the rsyslog config with sed. Instead:
#   1. upload the .deb that `make deb` built (no download from the image),
#   2. `apt-get install ./slsfwd_*.deb`: the agent, its unit, the user slsfwd and
#      /etc/rsyslog.d/80-slsfwd.conf (the tutorial's forwarding block); apt also pulls in
#      python3, adduser and rsyslog from Debian,
#   3. write /etc/slsfwd/slsfwd.toml from the variables below. It names the ECS RAM role, never
#      an AccessKey: each instance gets short-lived credentials from the metadata service
#      (see ../terraform/ram_role.tf),
#   4. enable the unit, and leave no state from the build instance in the image.
#
# Usage, from the repository root:
#   make deb
#   packer build -var sls_project=my-project -var sls_logstore=my-logstore \
#                -var source_image=<Debian 12 image ID> packaging/packer/slsfwd.pkr.hcl
# Packer itself authenticates with ALICLOUD_ACCESS_KEY / ALICLOUD_SECRET_KEY in the environment
# of the machine that runs it; those never reach the image. The builder is the "alicloud-ecs"
# one from HashiCorp's Alibaba Cloud plugin: declare that plugin in a `packer { required_plugins }`
# block as its documentation shows, or run `packer plugins install` for it first.

variable "region" {
  type        = string
  default     = "cn-hangzhou"
  description = "Region of the build instance, the image, the SLS project."
}

variable "source_image" {
  type        = string
  description = "A Debian 12 (bookworm) system image ID in var.region: the .deb is made for its python3 3.11."
}

variable "instance_type" {
  type    = string
  default = "ecs.t6-c1m1.large"
}

variable "slsfwd_version" {
  type        = string
  default     = "0.3.0"
  description = "Which dist/slsfwd_<version>_amd64.deb to install (agent/__init__.py's __version__)."
}

variable "sls_project" {
  type = string
  validation {
    condition     = length(var.sls_project) > 0
    error_message = "Set sls_project: the SLS project the logs go to."
  }
}

variable "sls_logstore" {
  type = string
  validation {
    condition     = length(var.sls_logstore) > 0
    error_message = "Set sls_logstore: the logstore in sls_project."
  }
}

variable "sls_endpoint" {
  type        = string
  default     = ""
  description = "SLS endpoint; empty: the region's intranet endpoint, reachable from ECS without a public IP."
}

variable "ecs_ram_role" {
  type        = string
  default     = "slsfwd-ecs"
  description = "The RAM role the instances run with: ../terraform/ram_role.tf var.role_name."
}

variable "imds_hardened" {
  type        = bool
  default     = false
  description = "true if the instances require metadata tokens (IMDSv2, 'security hardening mode')."
}

locals {
  deb      = "${path.root}/../../dist/slsfwd_${var.slsfwd_version}_amd64.deb"
  endpoint = var.sls_endpoint != "" ? var.sls_endpoint : "${var.region}-intranet.log.aliyuncs.com"
  # /etc/slsfwd/slsfwd.toml on the image: every other key keeps its default (packaging/slsfwd.toml).
  config = <<-EOT
    # /etc/slsfwd/slsfwd.toml, written by packaging/packer/slsfwd.pkr.hcl.
    # Credentials: the instance's RAM role, fetched from the metadata service; no AccessKey here.
    [input]
    listen = "127.0.0.1:11111"

    [sls]
    endpoint = "${local.endpoint}"
    project = "${var.sls_project}"
    logstore = "${var.sls_logstore}"
    ecs_ram_role = "${var.ecs_ram_role}"
    ecs_imdsv1_disabled = ${var.imds_hardened}

    [spool]
    dir = "/var/lib/slsfwd"

    [metrics]
    listen = "127.0.0.1:9469"
  EOT
}

source "alicloud-ecs" "debian12" {
  region                     = var.region
  source_image               = var.source_image
  instance_type              = var.instance_type
  image_name                 = "slsfwd-debian12-${formatdate("YYYYMMDDhhmmss", timestamp())}"
  image_description          = "Debian 12 with slsfwd ${var.slsfwd_version} forwarding rsyslog to ${var.sls_project}/${var.sls_logstore}"
  ssh_username               = "root"
  internet_charge_type       = "PayByTraffic"
  internet_max_bandwidth_out = 10 # SSH from the machine running Packer, and Debian's mirrors for apt
  io_optimized               = true
}

build {
  sources = ["source.alicloud-ecs.debian12"]

  # 1. The package, as built by `make deb` (replaces: wget logtail.sh).
  provisioner "file" {
    source      = local.deb
    destination = "/tmp/"
  }

  provisioner "shell" {
    # The config travels base64-encoded: an environment variable keeps no newlines safely.
    environment_vars = ["DEBIAN_FRONTEND=noninteractive", "SLSFWD_CONFIG_B64=${base64encode(local.config)}"]
    inline = [
      "set -eu",
      # cloud-init may still hold the apt lock on a fresh instance.
      "cloud-init status --wait >/dev/null 2>&1 || true",
      "apt-get update -q",
      # 2. (replaces: sh logtail.sh install <region>, and the sed edits of its config and of rsyslog's)
      "cd /tmp && apt-get install -y -q ./slsfwd_*.deb",
      # 3. The config (replaces: sed on ilogtail_config.json): a conffile of the package, mode 0640,
      #    group slsfwd, as the package sets it.
      "printf '%s' \"$SLSFWD_CONFIG_B64\" | base64 -d > /tmp/slsfwd.toml",
      "install -m 0640 -o root -g slsfwd /tmp/slsfwd.toml /etc/slsfwd/slsfwd.toml",
      "slsfwd check --config /etc/slsfwd/slsfwd.toml",
      "rsyslogd -N1 >/dev/null",
      # 4. Enabled, so every instance starts it at boot (after cloud-init has set the hostname).
      "systemctl enable slsfwd.service",
      # The build instance has no RAM role: nothing it logged may ship from the image's clones.
      # Stop both ends, then drop the agent's spool and rsyslog's queue for the forwarding action.
      "systemctl stop slsfwd.service rsyslog.service",
      "find /var/lib/slsfwd -mindepth 1 -delete",
      "rm -f /var/spool/rsyslog/fwdRule1*",
      "rm -f /tmp/slsfwd_*.deb /tmp/slsfwd.toml",
    ]
  }
}
