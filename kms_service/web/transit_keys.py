"""/v1/transit/*: key management: list, read, create, delete, rotate, config.

Thin handlers over the key service; their schemas are in ``PATHS`` at the end, which ``transit.PATHS`` places
in Vault's order among the crypto paths. The key fields (``NAME``, ``KEY_BODY``, ...) are shared with them.
"""

from __future__ import annotations

from typing import Any

from kms_service.acl import Capability
from kms_service.durations import DurationError, parse_seconds
from kms_service.errors import InvalidRequest, NotFound
from kms_service.keyring import KeySettings, validate_key_name
from kms_service.keytypes import canonical_type
from kms_service.keytypes.registry import DEFAULT_KEY_TYPE
from kms_service.mounts import DEFAULT_MOUNT
from kms_service.service import KeyConfigChange
from kms_service.web.framework import Call, Field, Operation, Path
from kms_service.web.framework import FieldType as T
from kms_service.web.key_fields import CUSTOM_METADATA, KEY_BODY, NEW_KEY_SIZE, NEW_KEY_TYPE, PARAMETER_SET
from kms_service.web.replies import Reply


async def read_key(call: Call, args: dict[str, Any]) -> dict[str, Any]:
    key = await call.keys.get(call.params["name"])
    if key is None:
        raise NotFound()
    body = key.body(args["context"])
    # Beyond Vault: per version, encryptions, signatures and last use, once the key has been used.
    if usage := await call.kms.usage.of(key):
        body["usage"] = usage
    # Beyond Vault: the nonce budget of a 96-bit random-nonce AEAD type, in encryptions of one version.
    if budget := call.kms.usage.nonce_budget(key):
        body["nonce_budget"] = budget
    return body


async def list_keys(call: Call, args: dict[str, Any]) -> dict[str, Any]:
    # Beyond Vault: ?metadata.<label>=<value> (any number) lists only the keys labelled so.
    metadata = {k[len("metadata.") :]: v for k, v in call.request.query.items() if k.startswith("metadata.")}
    names = await call.keys.names(metadata)
    if metadata and call.principal is not None:
        # Filtering answers questions about labels, which only a read shows: only keys the caller may read.
        mount = call.mount.path if call.mount is not None else DEFAULT_MOUNT
        names = [n for n in names if call.principal.acl.allows(f"{mount}/keys/{n}", Capability.READ)]
    if not names:
        raise NotFound()
    return {"keys": names}


async def rotate_key(call: Call, args: dict[str, Any]) -> dict[str, Any]:
    key = await call.keys.rotate(call.params["name"])
    return key.body()


async def configure_key(call: Call, args: dict[str, Any]) -> Reply:
    change = KeyConfigChange(
        min_decryption_version=args["min_decryption_version"],
        min_encryption_version=args["min_encryption_version"],
        deletion_allowed=args["deletion_allowed"],
        exportable=args["exportable"],
        allow_plaintext_backup=args["allow_plaintext_backup"],
        auto_rotate_period=duration_seconds("auto_rotate_period", args["auto_rotate_period"]),
        retain_versions=args["retain_versions"],
        custom_metadata=args["custom_metadata"],
    )
    key, warnings = await call.keys.configure(call.params["name"], change)
    return Reply(key.body(), warnings=warnings)


def duration_seconds(name: str, value: Any) -> int | None:
    """A duration field (``3600`` or ``"1h"``) as whole seconds, None when absent."""
    if value is None:
        return None
    try:
        return parse_seconds(value)
    except DurationError as exc:
        raise InvalidRequest(f"error converting input for field '{name}': {exc}") from None


async def key_exists(call: Call) -> bool:
    """Vault's existence check for key writes: a POST to a missing key is a create (needs `create`)."""
    call.found_key = await call.keys.get(call.params["name"], ())
    return call.found_key is not None


def new_key_settings(args: dict[str, Any]) -> tuple[str, KeySettings, int]:
    """The type, settings and key size of a key made by a write (keys/:name, or encrypt's upsert), after
    Vault's creation rules (``KeySettings.for_new_key``)."""
    type_name = canonical_type(args.get("type") or DEFAULT_KEY_TYPE, args.get("parameter_set"))
    key_size = args.get("key_size") or 0
    settings = KeySettings.for_new_key(
        type_name,
        derived=bool(args.get("derived")),
        convergent_encryption=bool(args.get("convergent_encryption")),
        exportable=bool(args.get("exportable")),
        allow_plaintext_backup=bool(args.get("allow_plaintext_backup")),
        auto_rotate_period=duration_seconds("auto_rotate_period", args.get("auto_rotate_period")) or 0,
        key_size=key_size,
        retain_versions=args.get("retain_versions") or 0,
        custom_metadata=args.get("custom_metadata"),
    )
    return type_name, settings, key_size


async def write_key(call: Call, args: dict[str, Any]) -> dict[str, Any]:
    """Create the key (upsert): an existing key is returned unchanged, as in Vault."""
    # config/keys disable_upsert stops encrypt from creating keys, not this explicit create (Vault).
    type_name, settings, key_size = new_key_settings(args)
    key = await call.keys.upsert(call.params["name"], type_name, settings, key_size)
    return key.body()


async def delete_key(call: Call, args: dict[str, Any]) -> None:
    await call.keys.delete(call.params["name"])


# -- the paths ----------------------------------------------------------------------------------------

NAME = Field("name", T.STRING, "Name of the key.", check=validate_key_name)
# Beyond Vault (shown on read only when set).
RETAIN_VERSIONS = Field(
    "retain_versions",
    T.INT,
    "Version retention: keep the newest N versions decryptable; each rotation advances min_decryption_version "
    "(0: off). The key body's next_rotation_retires shows what the next rotation would retire.",
)
PATHS = (
    Path(
        "transit/keys",
        "List the keys.",
        fields=(),
        operations={"LIST": Operation(list_keys, returns=(Field("keys", T.LIST, "Key names."),))},
        description="The LIST method, or GET with ?list=true. No keys: 404.",
    ),
    Path(
        "transit/keys/:name",
        "Read a key: its configuration and versions (asymmetric versions with their public key).",
        fields=(
            NAME,
            NEW_KEY_TYPE,
            Field("derived", T.BOOL, "Per-context keys (context on every request)."),
            Field("convergent_encryption", T.BOOL, "Same plaintext and context, same ciphertext (needs derived)."),
            Field("exportable", T.BOOL, "Whether the key may be exported (one-way)."),
            Field("allow_plaintext_backup", T.BOOL, "Whether a plaintext backup is allowed (one-way)."),
            Field("auto_rotate_period", T.DURATION, "Rotate automatically this often: 0 (off) or at least 1h."),
            NEW_KEY_SIZE,
            PARAMETER_SET,
            RETAIN_VERSIONS,
            CUSTOM_METADATA,
            Field("context", T.BASE64, "Read only: context for a derived key's public key."),
        ),
        operations={
            "GET": Operation(read_key, returns=KEY_BODY),
            "POST": Operation(write_key, existence=key_exists, returns=KEY_BODY),
            "DELETE": Operation(delete_key),
        },
        description=(
            "A missing key is a 404 with no error message, as in Vault. A write creates the key (needs `create`); "
            "to an existing key it changes nothing and returns it. Delete needs deletion_allowed."
        ),
    ),
    Path(
        "transit/keys/:name/rotate",
        "Rotate a key: add a version, which becomes the one used to encrypt and sign.",
        fields=(NAME,),
        operations={"POST": Operation(rotate_key, returns=KEY_BODY)},
    ),
    Path(
        "transit/keys/:name/config",
        "Configure a key.",
        fields=(
            NAME,
            Field(
                "auto_rotate_period",
                T.DURATION,
                "Rotate automatically this often (seconds or e.g. 24h): 0 (off) or at least 1h.",
            ),
            Field("min_decryption_version", T.INT, "The oldest version that may decrypt or verify."),
            Field("min_encryption_version", T.INT, "The oldest version that may encrypt or sign (0: latest only)."),
            Field("deletion_allowed", T.BOOL, "Whether the key may be deleted."),
            Field("exportable", T.BOOL, "Whether the key may be exported (can only be turned on)."),
            Field("allow_plaintext_backup", T.BOOL, "Whether a plaintext backup is allowed (can only be turned on)."),
            RETAIN_VERSIONS,
            CUSTOM_METADATA,
        ),
        operations={"POST": Operation(configure_key, returns=KEY_BODY)},
    ),
)
