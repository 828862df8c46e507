"""A key's live versions read off the other server with ``export`` (no side effect there), as this
service's key material; shared by both directions (in: what to move; out: whether the key there is the same)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from kms_service import vault_formats
from kms_service.keytypes import KeyType
from kms_service.service.migration.client import (
    VaultClient,
    error_text,
    quoted,
)
from kms_service.service.migration.reports import (
    FAILED,
    NOT_MOVABLE,
    KeyReport,
    Skip,
)


def created_times(body: dict[str, Any]) -> dict[int, datetime]:
    """Each live version's creation time from the key body (symmetric: unix seconds; asymmetric: RFC 3339)."""
    times = {}
    for number, value in (body.get("keys") or {}).items():
        try:
            if isinstance(value, int):
                times[int(number)] = datetime.fromtimestamp(value, UTC)
            elif isinstance(value, dict) and value.get("creation_time"):
                times[int(number)] = datetime.fromisoformat(value["creation_time"]).astimezone(UTC)
        except (ValueError, TypeError, OverflowError):
            continue
    return times


async def read_exported(
    client: VaultClient, mount: str, name: str, key_type: KeyType, body: dict[str, Any], imported: bool
) -> dict[int, vault_formats.SourceVersion]:
    """The live versions, read with export (no side effect on the source)."""
    hmac_keys = await _export_type(client, mount, name, "hmac-key")
    keys: dict[str, str] | None = None
    if key_type.name != "hmac":
        export_type = "signing-key" if key_type.supports_signing else "encryption-key"
        keys = await _export_type(client, mount, name, export_type)
    times = created_times(body)
    latest = int(body["latest_version"])
    result = {}
    for number_text, hmac_text in hmac_keys.items():
        number = int(number_text)
        key_text = None if keys is None else keys.get(number_text)
        if keys is not None and not key_text:
            raise Skip(
                KeyReport(
                    name,
                    NOT_MOVABLE,
                    key_type=key_type.name,
                    detail=f"version {number} has no private key on the source (a public-key-only import)",
                )
            )
        try:
            material = vault_formats.material_from_export(key_type, key_text, hmac_text, imported and number == latest)
        except vault_formats.FormatError as exc:
            raise Skip(KeyReport(name, FAILED, key_type=key_type.name, detail=str(exc))) from None
        result[number] = vault_formats.SourceVersion(number, times.get(number, datetime.now(UTC)), material)
    if not result:
        raise Skip(KeyReport(name, FAILED, key_type=key_type.name, detail="export returned no versions"))
    return dict(sorted(result.items()))


class Denied(Exception):
    """The token may not export the key (403): the caller reports the route it could not take."""

    def __init__(self, what: str) -> None:
        self.what = what


async def _export_type(client: VaultClient, mount: str, name: str, export_type: str) -> dict[str, str]:
    status, data = await client.request("GET", f"{mount}/export/{export_type}/{quoted(name)}")
    if status == 403:
        raise Denied(f"export/{export_type}")
    if status != 200:
        detail = f"export/{export_type} failed ({status}) {error_text(data)}".strip()
        raise Skip(KeyReport(name, NOT_MOVABLE if status == 403 else FAILED, detail=detail))
    return dict(data["data"]["keys"])
