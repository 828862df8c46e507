"""/v1/transit/*: export, byok-export, import and import_version (bring your own key).

Imported keys arrive as Vault's BYOK blob wrapped for this engine's ``wrapping_key`` (``byok.unwrap_byok``),
or as a PEM public key alone. Thin handlers; the key model does the formats (``Key.export``,
``Key.byok_export``, ``KeyType.import_key``).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from kms_service.byok import unwrap_byok
from kms_service.errors import InvalidRequest, NotFound, RefusedAsServerError
from kms_service.keyring import KeySettings, validate_key_name
from kms_service.keytypes import DEFAULT_KEY_TYPE, KeyType
from kms_service.keytypes import key_type as key_type_named
from kms_service.material import KeyMaterial
from kms_service.service.keys import SOFT_DELETED
from kms_service.web.framework import Call, Field, Operation, Path
from kms_service.web.framework import FieldType as T
from kms_service.web.key_fields import IMPORT_KEY_TYPE
from kms_service.web.transit_keys import duration_seconds


async def export_key(call: Call, args: dict[str, Any]) -> dict[str, Any]:
    key = await call.keys.get(call.params["name"], ())
    if key is None:
        raise NotFound()
    if key.settings.soft_deleted:
        raise InvalidRequest(SOFT_DELETED)
    keys = key.export(call.params["export_type"], call.params.get("version"))
    return {"name": key.name, "type": key.key_type.name, "keys": keys}


async def byok_export(call: Call, args: dict[str, Any]) -> dict[str, Any]:
    destination = await call.keys.get(call.params["destination"], ())
    source = await call.keys.get(call.params["source"], ())
    if destination is None or source is None:
        raise InvalidRequest("no such key" if source is None else "no such destination key")
    if source.settings.soft_deleted or destination.settings.soft_deleted:
        raise InvalidRequest(SOFT_DELETED)
    keys = source.byok_export(destination, call.params.get("version"), args["hash"])
    return {"name": source.name, "type": source.key_type.name, "keys": keys}


async def _unwrapped(call: Call, args: dict[str, Any]) -> bytes:
    try:
        blob = base64.b64decode(args["ciphertext"], validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest("error decoding ciphertext: illegal base64 data") from None
    return unwrap_byok(await call.kms.wrapping.private_key(), blob, args["hash_function"])


async def _material(call: Call, args: dict[str, Any], key_type: KeyType, derived: bool) -> KeyMaterial:
    if args["ciphertext"]:
        return key_type.import_key(await _unwrapped(call, args))
    if args["public_key"]:
        return key_type.import_public_key(args["public_key"], derived=derived)
    raise InvalidRequest("one of ciphertext or public_key must be provided")


async def import_key(call: Call, args: dict[str, Any]) -> None:
    if args["convergent_encryption"]:
        raise RefusedAsServerError("import cannot be used on keys with convergent encryption enabled")
    name = call.params["name"]
    type_name = args["type"] or DEFAULT_KEY_TYPE
    period = duration_seconds("auto_rotate_period", args["auto_rotate_period"]) or 0
    if period and not args["allow_rotation"]:
        raise InvalidRequest("allow_rotation must be set to true if auto-rotation is enabled")
    settings = KeySettings.for_new_key(
        type_name,
        derived=args["derived"],
        exportable=args["exportable"],
        allow_plaintext_backup=args["allow_plaintext_backup"],
        auto_rotate_period=period,
    )
    settings = KeySettings(
        **{
            **{n: getattr(settings, n) for n in KeySettings.names()},
            "allow_imported_key_rotation": args["allow_rotation"],
        }
    )
    key_type = key_type_named(type_name)
    material = await _material(call, args, key_type, args["derived"])
    await call.keys.import_key(name, type_name, material, settings)


async def import_version(call: Call, args: dict[str, Any]) -> None:
    raw = await _unwrapped(call, args) if args["ciphertext"] else None
    if raw is None and not args["public_key"]:
        raise InvalidRequest("one of ciphertext or public_key must be provided")

    def make(key_type: KeyType) -> KeyMaterial:
        return key_type.import_key(raw) if raw is not None else key_type.import_public_key(args["public_key"])

    await call.keys.import_version(call.params["name"], make, args["version"] or 0)


DERIVED_KEY_TYPES = ("aes128-gcm96", "aes256-gcm96", "chacha20-poly1305", "xchacha20-poly1305")


async def derive_key(call: Call, args: dict[str, Any]) -> None:
    """OpenBao's ECDH: a new key :name holding HKDF-SHA256(ECDH(base key, peer public key)), no salt, no info."""
    if args["key_derivation_algorithm"] != "ecdh":
        raise InvalidRequest("unsupported key derivation algorithm; use ecdh")
    if args["derived_key_type"] not in DERIVED_KEY_TYPES:
        raise InvalidRequest(f"derived_key_type must be one of {', '.join(DERIVED_KEY_TYPES)}")
    if not args["base_key_name"]:
        raise InvalidRequest("base_key_name is required")
    if not args["peer_public_key"]:
        raise InvalidRequest("peer_public_key is required")
    validate_key_name(args["base_key_name"])
    base = await call.keys.get(args["base_key_name"], (args["base_key_version"],))
    if base is None:
        raise InvalidRequest("base key not found")
    key_type = key_type_named(args["derived_key_type"])
    secret = base.ecdh(args["peer_public_key"], args["base_key_version"])
    raw = HKDF(algorithm=hashes.SHA256(), length=key_type.KEY_SIZE, salt=None, info=None).derive(secret)
    settings = KeySettings.for_new_key(key_type.name)
    await call.keys.import_key(call.params["name"], key_type.name, key_type.import_key(raw), settings)


NAME = Field("name", T.STRING, "Name of the key.", check=validate_key_name)
VERSION = Field("version", T.STRING, "One version (an integer, v<integer> or latest); absent: every live version.")
HASH_FUNCTION = Field(
    "hash_function",
    T.STRING,
    "The hash of the blob's RSA-OAEP layer: SHA1, SHA224, SHA256, SHA384, SHA512.",
    default="SHA256",
)
CIPHERTEXT = Field(
    "ciphertext",
    T.STRING,
    "Base64 BYOK blob: RSA-OAEP(wrapping_key, ephemeral AES-256 key) ‖ AES-KWP(ephemeral key, the key).",
)
PUBLIC_KEY = Field("public_key", T.STRING, "PEM public key, to import a public-key-only version (rsa, ecdsa, ed25519).")

PATHS = (
    Path(
        "transit/derive-key/:name",
        "Create :name from an ECDH agreement between an ECDSA key here and a peer's public key (OpenBao).",
        fields=(
            NAME,
            Field("key_derivation_algorithm", T.STRING, "ecdh.", default="ecdh"),
            Field("peer_public_key", T.STRING, "The peer's PEM public key, on the base key's curve."),
            Field("base_key_name", T.STRING, "An ecdsa-p256/p384/p521 key here."),
            Field("base_key_version", T.INT, "The base key's version (0: latest).", default=0),
            Field(
                "derived_key_type",
                T.STRING,
                "aes256-gcm96 (default), aes128-gcm96, chacha20-poly1305 or xchacha20-poly1305.",
                default="aes256-gcm96",
            ),
        ),
        operations={"POST": Operation(derive_key)},
    ),
    Path(
        "transit/export/:export_type/:name(/:version)",
        "Export key material: encryption-key, signing-key, hmac-key (exportable keys), public-key, certificate-chain.",
        fields=(Field("export_type", T.STRING, "What to export."), NAME, VERSION),
        operations={"GET": Operation(export_key)},
    ),
    Path(
        "transit/byok-export/:destination/:source(/:version)",
        "Export a key wrapped for another service's wrapping key (imported here as the RSA key :destination).",
        fields=(
            Field(
                "destination", T.STRING, "An RSA key holding the other service's wrapping key.", check=validate_key_name
            ),
            Field("source", T.STRING, "The key to export (exportable).", check=validate_key_name),
            VERSION,
            Field("hash", T.STRING, "The hash of the blob's RSA-OAEP layer.", default="SHA256"),
        ),
        operations={"GET": Operation(byok_export)},
    ),
    Path(
        "transit/keys/:name/import",
        "Create a key from a BYOK blob wrapped for wrapping_key (or from a public key alone).",
        fields=(
            NAME,
            CIPHERTEXT,
            HASH_FUNCTION,
            PUBLIC_KEY,
            IMPORT_KEY_TYPE,
            Field(
                "allow_rotation",
                T.BOOL,
                "Allow rotating the key here (new versions are then generated).",
                default=False,
            ),
            Field("derived", T.BOOL, "Per-context keys.", default=False),
            Field("context", T.BASE64, "Accepted for Vault's clients; unused."),
            Field("exportable", T.BOOL, "Whether the key may be exported (one-way).", default=False),
            Field("allow_plaintext_backup", T.BOOL, "Whether a plaintext backup is allowed (one-way).", default=False),
            Field("auto_rotate_period", T.DURATION, "Rotate automatically (needs allow_rotation): 0 or at least 1h."),
            Field("convergent_encryption", T.BOOL, "Refused: imported keys cannot be convergent.", default=False),
        ),
        operations={"POST": Operation(import_key)},
    ),
    Path(
        "transit/keys/:name/import_version",
        "Add an imported version to an imported key, or complete a public-key-only version with its private key.",
        fields=(
            NAME,
            CIPHERTEXT,
            HASH_FUNCTION,
            PUBLIC_KEY,
            Field("version", T.INT, "A public-key-only version to complete (absent: add a new version)."),
        ),
        operations={"POST": Operation(import_version)},
    ),
)
