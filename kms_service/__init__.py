"""kms-service: encryption as a service behind HashiCorp Vault's transit API."""

__version__ = "0.1.0"
