"""The other server's HTTP API (Vault or OpenBao), spoken with a plain aiohttp client."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import aiohttp

from kms_service.errors import KMSError

# This service's wrapping key, imported into the source for byok-export: kms-service-wrapping-<fingerprint>.
WRAPPING_KEY_PREFIX = "kms-service-wrapping-"


class MigrationError(KMSError):
    """The migration cannot start (source unreachable, bad token, unknown mount): one line, no secrets."""


class VaultClient:
    """Vault's HTTP API at ``addr`` with ``token``. Replies are (status, JSON body or None)."""

    def __init__(self, addr: str, token: str, timeout: float = 60) -> None:
        parts = urlsplit(addr)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise MigrationError("--addr must be an http:// or https:// URL")
        self.addr = urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))
        # For messages: the address without any user:password part.
        host = parts.hostname + (f":{parts.port}" if parts.port else "")
        self.shown = urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", ""))
        self._token = token
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> VaultClient:
        self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        assert self._session is not None
        url = f"{self.addr}/v1/{path}"
        try:
            async with self._session.request(
                method, url, json=body, headers={"X-Vault-Token": self._token}
            ) as response:
                text = await response.text()
                status = response.status
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise MigrationError(f"cannot reach {self.shown}: {type(exc).__name__}: {exc}".rstrip(": ")) from None
        try:
            data = json.loads(text) if text else None
        except ValueError:
            data = None
        return status, data

    async def check(self, mount: str) -> list[str]:
        """Fail with one line unless the server answers, takes the token and has ``mount``; the key names
        in the mount (OpenBao's ``import/`` wrapping-key entry left out)."""
        status, data = await self.request("GET", "sys/health")
        if status not in (200, 429, 472, 473) or not isinstance(data, dict):
            raise MigrationError(f"{self.shown} does not answer like Vault or OpenBao (sys/health: {status})")
        if data.get("sealed"):
            raise MigrationError(f"{self.shown} is sealed")
        self.flavor = "vault" if "performance_standby" in data else "openbao"
        status, _ = await self.request("GET", "auth/token/lookup-self")
        if status == 403:
            raise MigrationError(f"{self.shown} refused the token (403 permission denied): check --token")
        status, data = await self.request("LIST", f"{mount}/keys")
        errors = data.get("errors") if isinstance(data, dict) else None
        if status == 404 and errors:
            raise MigrationError(f"{self.shown} has no transit mount at {mount}/ (check --mount)")
        if status == 404:
            return []
        if status == 403:
            raise MigrationError(f"the token may not list {mount}/keys on {self.shown} (403): name keys with --key")
        if status != 200 or not isinstance(data, dict):
            raise MigrationError(f"listing {mount}/keys on {self.shown} failed ({status})")
        # Not OpenBao's "import/" wrapping-key entry, nor this service's wrapping key imported for byok-export.
        names = data["data"].get("keys", [])
        return sorted(name for name in names if "/" not in name and not name.startswith(WRAPPING_KEY_PREFIX))


def error_text(data: Any) -> str:
    errors = data.get("errors") if isinstance(data, dict) else None
    if not errors:
        return ""
    text = str(errors[0])
    # Vault's multierror wrapping: "1 error occurred:\n\t* <msg>\n\n"
    if "\n\t* " in text:
        text = text.split("\n\t* ", 1)[1].strip()
    return text[:300]


def quoted(name: str) -> str:
    return quote(name, safe="")
