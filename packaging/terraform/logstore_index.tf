# Terraform: the index of every logstore slsfwd writes to, so its logs can be searched on day one.
#
# SLS searches only what is indexed: `app-name: todo-list` finds nothing until app-name has a
# field index, and a logstore created by Terraform (as in the tutorial) has no index at all.
# This gives sls_logstore and each routed logstore (var.routed_logstores, declared in
# ram_role.tf) a full-text index and a field index for every key slsfwd ships.
# tests/unit/test_terraform.py checks that local.slsfwd_fields holds exactly those keys, taken from
# the agent's code, so the two cannot drift apart. Keys that your own [[input.formats]] fields or
# [[processors]] add need a field index too: name them in var.extra_index_fields.
#
# The logstores must exist first (the tutorial's alicloud_log_store). A logstore that already
# has an index, e.g. one made in the console, is taken over instead of created:
#
#   terraform import 'alicloud_log_store_index.slsfwd["my-logstore"]' my-project:my-logstore

variable "extra_index_fields" {
  type        = map(string)
  default     = {}
  description = "Field indexes beyond slsfwd's own keys, name => type (text, long, double, json): the fields of your [[input.formats]] and the keys your processors add."
}

locals {
  # Every key slsfwd ships, with its index type. The first seven are the built-in 0.1 format's
  # (Logtail's keys); orig-time holds a line's own unix time when SLS would have refused it and
  # the receive time was used; parse-error names why a line was shipped whole as msg;
  # multiline-lines counts the lines a multiline processor joined into msg; and
  # __tag__:__hostname__ is the LogGroup tag with the agent's host name.
  slsfwd_fields = {
    "hostname"             = "text"
    "pri-text"             = "text"
    "protocol-version"     = "text"
    "app-name"             = "text"
    "procid"               = "text"
    "msgid"                = "text"
    "msg"                  = "text"
    "orig-time"            = "long"
    "parse-error"          = "text"
    "multiline-lines"      = "long"
    "__tag__:__hostname__" = "text"
  }

  # The SLS console's default delimiters. '-' and '.' are not among them, so a query such as
  # app-name: todo-list or hostname: web-1.example matches the whole value.
  sls_token = ", '\";=()[]{}?@&<>/:\n\t\r"

  slsfwd_logstores = toset(concat([var.sls_logstore], var.routed_logstores))
}

resource "alicloud_log_store_index" "slsfwd" {
  for_each = local.slsfwd_logstores
  project  = var.sls_project
  logstore = each.value

  full_text {
    case_sensitive = false
    token          = local.sls_token
  }

  dynamic "field_search" {
    for_each = merge(var.extra_index_fields, local.slsfwd_fields)
    content {
      name             = field_search.key
      type             = field_search.value
      token            = field_search.value == "text" ? local.sls_token : null
      enable_analytics = true
    }
  }
}
