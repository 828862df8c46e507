"""The HTTP layer: Vault's transit wire format over aiohttp. Thin: parse, call a service, shape JSON."""
