"""slsfwd: a Logtail-compatible log forwarder for Alibaba Cloud Log Service."""

__version__ = "0.3.0"
