"""kms-service: encryption as a service behind HashiCorp Vault's transit API."""

import os

# Vault's LIST method needs aiohttp's pure-Python request parser (web/server.py says why), which aiohttp
# chooses when it is first imported: before any module here imports it. Worker processes inherit it.
os.environ["AIOHTTP_NO_EXTENSIONS"] = "1"

__version__ = "0.1.0"
