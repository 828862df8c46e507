"""/v1/transit/keys/:name/*, backup and restore: a key's certificates (csr, set-certificate), its backup and
restore, soft delete and trim, and the mount's wrapping key for imports (BYOK).

Thin handlers over the key service and the Key model; their schemas are in ``PATHS`` at the end.
"""

from __future__ import annotations

import asyncio
from typing import Any

from kms_service import certificates
from kms_service.errors import InvalidRequest, RefusedAsServerError
from kms_service.keyring import MAX_VERSION, validate_key_name
from kms_service.web.execution import CRYPTO_THREADS
from kms_service.web.framework import Call, Field, Operation, Path
from kms_service.web.framework import FieldType as T
from kms_service.web.replies import Reply
from kms_service.web.transit import usable_key


async def trim_key(call: Call, args: dict[str, Any]) -> dict[str, Any]:
    key = await call.keys.trim(call.params["name"], args["min_available_version"])
    return key.body()


def _version(value: int | str | None) -> int:
    """Vault's version argument: "", "latest", an integer or "v<integer>"; 0 means latest."""
    if isinstance(value, int):
        if not 0 <= value <= MAX_VERSION:
            raise InvalidRequest("invalid version")
        return value
    text = (value or "").strip()
    if text in ("", "latest"):
        return 0
    digits = text[1:] if text.startswith("v") else text
    if not digits.isascii() or not digits.isdigit() or len(digits) > 9:
        raise InvalidRequest("invalid version: use an integer, v<integer> or latest")
    return int(digits)


async def csr(call: Call, args: dict[str, Any]) -> dict[str, Any]:
    version = _version(args["version"])
    key = await usable_key(call, "key not found", (version,))
    if not key.key_type.supports_signing:
        raise InvalidRequest(f"key type {key.key_type.name} does not support signing")
    if key.settings.derived:
        raise InvalidRequest("CSRs are not supported for derived keys")
    kv = key.version_for_encryption(version, "signing")
    if kv.handle.private is None:
        raise InvalidRequest("a public-key-only version cannot sign a CSR")
    if "sign" in key.key_type.slow_operations:  # an RSA or ML-DSA private key: not on the event loop
        loop = asyncio.get_running_loop()
        csr_pem = await loop.run_in_executor(CRYPTO_THREADS, certificates.build_csr, kv.handle.private, args["csr"])
    else:
        csr_pem = certificates.build_csr(kv.handle.private, args["csr"])
    return {"name": key.name, "type": key.key_type.name, "csr": csr_pem}


async def set_certificate(call: Call, args: dict[str, Any]) -> dict[str, Any]:
    key = await call.keys.set_certificate_chain(
        call.params["name"], _version(args["version"]), args["certificate_chain"]
    )
    version = _version(args["version"]) or key.latest_version
    chain = key.versions[version].material.extra["certificate_chain"]
    return {"name": key.name, "type": key.key_type.name, "certificate_chain": chain}


async def wrapping_key(call: Call, args: dict[str, Any]) -> dict[str, Any]:
    return {"public_key": await call.kms.wrapping.public_key_pem()}


async def backup_key(call: Call, args: dict[str, Any]) -> dict[str, Any]:
    return {"backup": await call.keys.backup(call.params["name"])}


async def restore_key(call: Call, args: dict[str, Any]) -> None:
    name = call.params.get("url_name") or args["name"]
    if name is not None and "/" in name:
        raise RefusedAsServerError("key names cannot be paths")
    if name is not None:
        validate_key_name(name)
    await call.keys.restore(name, args["backup"], args["force"])


async def soft_delete(call: Call, args: dict[str, Any]) -> Reply:
    key, warnings = await call.keys.set_soft_deleted(call.params["name"], True)
    return Reply(key.body(), warnings=warnings)


async def soft_delete_restore(call: Call, args: dict[str, Any]) -> Reply:
    key, warnings = await call.keys.set_soft_deleted(call.params["name"], False)
    return Reply(key.body(), warnings=warnings)


NAME = Field("name", T.STRING, "Name of the key.", check=validate_key_name)

VERSION = Field("version", T.VERSION, "The key version: latest (the default), an integer or v<integer>.")

PATHS = (
    Path(
        "transit/keys/:name/csr",
        "A certificate signing request signed by a version of a signing key (Vault 1.15).",
        fields=(NAME, VERSION, Field("csr", T.STRING, "PEM CSR template: its subject and extensions are used.")),
        operations={"POST": Operation(csr)},
    ),
    Path(
        "transit/keys/:name/set-certificate",
        "Store a certificate chain (PEM, leaf first) for a version of a signing key; the leaf must certify it.",
        fields=(
            NAME,
            VERSION,
            Field(
                "certificate_chain", T.STRING, "PEM certificates, leaf first.", required="certificate chain is required"
            ),
        ),
        operations={"POST": Operation(set_certificate)},
    ),
    Path(
        "transit/wrapping_key",
        "The public half of the mount's RSA-4096 wrapping key, for wrapping keys to import (BYOK).",
        fields=(),
        operations={"GET": Operation(wrapping_key, returns=(Field("public_key", T.STRING, "PEM public key."),))},
    ),
    Path(
        "transit/backup/:name",
        "A plaintext backup of the key, every version (needs exportable and allow_plaintext_backup).",
        fields=(NAME,),
        operations={"GET": Operation(backup_key)},
    ),
    Path(
        "transit/restore(/:url_name)",
        "Restore a backup, keeping every version number; an existing key only with force.",
        fields=(
            Field("url_name", T.STRING, "In the URL: the name to restore under."),
            Field("name", T.STRING, "The name to restore under (default: the backup's)."),
            Field("backup", T.STRING, "The backup, as backup/:name returned it.", required="'backup' must be supplied"),
            Field("force", T.BOOL, "Replace an existing key of the same type.", default=False),
        ),
        operations={"POST": Operation(restore_key, large_body=True)},
    ),
    Path(
        "transit/keys/:name/soft-delete",
        "Soft-delete the key (OpenBao): kept, but every use is refused until soft-delete-restore.",
        fields=(NAME,),
        operations={"DELETE": Operation(soft_delete)},
    ),
    Path(
        "transit/keys/:name/soft-delete-restore",
        "Undo a soft delete (OpenBao).",
        fields=(NAME,),
        operations={"POST": Operation(soft_delete_restore)},
    ),
    Path(
        "transit/keys/:name/trim",
        "Delete, for good, every version below min_available_version.",
        fields=(
            NAME,
            Field(
                "min_available_version",
                T.INT,
                "Versions below this are deleted; at most min_encryption_version and min_decryption_version.",
                required="missing min_available_version",
            ),
        ),
        operations={"POST": Operation(trim_key)},
    ),
)
