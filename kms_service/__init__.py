"""kms-service: encryption as a service behind HashiCorp Vault's transit API."""

import os

# Vault's LIST method needs aiohttp's pure-Python request parser (web/server.py says why), which aiohttp
# chooses when it is first imported: before any module here imports it. Worker processes inherit it.
os.environ["AIOHTTP_NO_EXTENSIONS"] = "1"

__version__ = "0.1.0"

# The Vault API level this service implements, answered as ``version`` wherever Vault answers one (sys/health,
# sys/seal-status, sys/version-history): Vault's clients compare it as a Vault version. The package's own
# version is answered beside it as ``kms_service_version``.
VAULT_API_VERSION = "1.18.5"
