"""/v1/transit/*: trim, the engine's settings (config/keys, cache-config), datakey, random and hash.

Thin handlers over the key service and the Key model; their schemas are in ``PATHS`` at the end.
"""

from __future__ import annotations

import asyncio
import base64
import os
from typing import Any

from cryptography.hazmat.primitives import hashes

from kms_service import certificates
from kms_service.errors import InvalidRequest, RefusedAsServerError
from kms_service.keyring import MAX_VERSION, b64encode, new_datakey, validate_key_name
from kms_service.keytypes import HASH_ALGORITHMS, EncryptOptions
from kms_service.web.framework import CRYPTO_THREADS, Call, Field, Operation, Path
from kms_service.web.framework import FieldType as T
from kms_service.web.replies import Reply
from kms_service.web.transit import usable_key, using

MAX_RANDOM_BYTES = 128 * 1024
RANDOM_SOURCES = ("platform", "seal", "all")
# transit/hash takes Vault's hash names except sha1.
HASHES = {name: algorithm for name, algorithm in HASH_ALGORITHMS.items() if name != "sha1"}


async def trim_key(call: Call, args: dict[str, Any]) -> dict[str, Any]:
    key = await call.keys.trim(call.params["name"], args["min_available_version"])
    return key.body()


async def read_keys_config(call: Call, args: dict[str, Any]) -> dict[str, Any]:
    return {"disable_upsert": (await call.keys.engine_settings())["disable_upsert"]}


async def write_keys_config(call: Call, args: dict[str, Any]) -> dict[str, Any]:
    if args["disable_upsert"] is not None:
        await call.keys.set_engine_settings(disable_upsert=args["disable_upsert"])
    return await read_keys_config(call, args)


async def read_cache_config(call: Call, args: dict[str, Any]) -> dict[str, Any]:
    return {"size": (await call.keys.engine_settings())["cache_size"]}


async def write_cache_config(call: Call, args: dict[str, Any]) -> dict[str, Any]:
    size = args["size"]
    if size < 0 or 0 < size < 10:
        raise InvalidRequest("size must be 0 or a value greater or equal to 10")
    await call.keys.set_engine_settings(cache_size=size)
    # Recorded for Vault's clients; every key this server holds stays cached (keys are small), so the
    # size bounds nothing yet.
    return {"size": size}


async def datakey(call: Call, args: dict[str, Any]) -> dict[str, Any]:
    kind = call.params["plaintext"]
    if kind not in ("plaintext", "wrapped"):
        raise InvalidRequest("Invalid path, must be 'plaintext' or 'wrapped'")
    new_key = new_datakey(args["bits"])  # made (and its bit length checked) before the key is looked up
    key = await usable_key(call, "encryption key not found", (args["key_version"],))
    options = EncryptOptions(
        associated_data=args["associated_data"], context=args["context"], padding_scheme=args["padding_scheme"] or ""
    )
    async with using(call, key) as use:
        ciphertext, version = use.encrypt(new_key, options, args["key_version"])
    data: dict[str, Any] = {"ciphertext": ciphertext, "key_version": version}
    if kind == "plaintext":
        data["plaintext"] = b64encode(new_key)
    return data


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


def _random_args(call: Call, args: dict[str, Any]) -> tuple[int, str]:
    """``random/:source/:bytes``, ``random/:bytes`` or ``random/:source``; the URL beats the body."""
    source, count = args.get("source") or "platform", args.get("bytes", 32)
    first, second = call.params.get("url_source"), call.params.get("url_bytes")
    if second is not None:
        source, count = first, _int_segment(second)
    elif first is not None:
        if first in RANDOM_SOURCES:
            source = first
        else:
            count = _int_segment(first)
    if source not in RANDOM_SOURCES:
        raise InvalidRequest(f"unsupported entropy source {source[:16]!r}; use platform, seal or all")
    if count < 1:
        raise InvalidRequest("'bytes' cannot be less than 1")
    if count > MAX_RANDOM_BYTES:
        raise InvalidRequest(f"'bytes' should be less than {MAX_RANDOM_BYTES}")
    return count, source


def _int_segment(text: str) -> int:
    if not text.isascii() or not text.isdigit() or len(text) > 9:
        raise InvalidRequest("error parsing byte count as an integer")
    return int(text)


def _formatted(data: bytes, fmt: str) -> str:
    if fmt == "hex":
        return data.hex()
    if fmt == "base64":
        return base64.b64encode(data).decode("ascii")
    raise InvalidRequest(f'unsupported encoding format {fmt[:16]!r}; must be "hex" or "base64"')


async def random(call: Call, args: dict[str, Any]) -> dict[str, Any]:
    count, source = _random_args(call, args)
    # "seal" and "all" name Vault Enterprise's HSM sources; like OpenBao, this server has only the platform's.
    if source != "platform":
        call.add_warning(f"entropy source {source!r} is not available; used the platform's (os.urandom)")
    return {"random_bytes": _formatted(os.urandom(count), args["format"])}


async def hash_data(call: Call, args: dict[str, Any]) -> dict[str, Any]:
    algorithm = call.params.get("url_algorithm") or args["algorithm"]
    if algorithm not in HASHES:
        raise InvalidRequest(f"unsupported hash algorithm {algorithm[:16]!r}")
    if args["input"] is None:
        raise InvalidRequest("input missing")
    hasher = hashes.Hash(HASHES[algorithm]())
    hasher.update(args["input"])
    digest = hasher.finalize()
    return {"sum": _formatted(digest, args["format"])}


NAME = Field("name", T.STRING, "Name of the key.", check=validate_key_name)
FORMAT = Field("format", T.STRING, "Output encoding: hex or base64.", default="base64")

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
        "The public half of the engine's RSA-4096 wrapping key, for wrapping keys to import (BYOK).",
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
    Path(
        "transit/config/keys",
        "The engine's key settings: disable_upsert (no key is created by encrypt or a key write to a new name).",
        fields=(Field("disable_upsert", T.BOOL, "Refuse to create keys implicitly."),),
        operations={"GET": Operation(read_keys_config), "POST": Operation(write_keys_config)},
    ),
    Path(
        "transit/cache-config",
        "The key cache's size (0: unlimited, else at least 10), as Vault takes it.",
        fields=(Field("size", T.INT, "0 (unlimited) or at least 10.", default=0),),
        operations={"GET": Operation(read_cache_config), "POST": Operation(write_cache_config)},
    ),
    Path(
        "transit/datakey/:plaintext/:name",
        "Make a new data key, returned wrapped (encrypted with the named key) and, on /plaintext, in the clear.",
        fields=(
            Field("plaintext", T.STRING, "plaintext (also return the key in the clear) or wrapped."),
            NAME,
            Field("bits", T.INT, "Key length: 128, 256 or 512.", default=256),
            Field("context", T.BASE64, "Base64 context (derived keys)."),
            Field("associated_data", T.BASE64, "Base64 associated data (AEAD).", default=b""),
            Field("key_version", T.INT, "The key version to wrap with (0: latest).", default=0),
            Field("padding_scheme", T.STRING, "RSA keys: oaep (the default) or pkcs1v15."),
            Field("nonce", T.BASE64, "Refused.", refuse="provided nonce not allowed for this key"),
        ),
        operations={"POST": Operation(datakey, crypto="datakey")},
    ),
    Path(
        "transit/random(/:url_source)",
        "Random bytes from the platform's CSPRNG.",
        fields=(
            Field("url_source", T.STRING, "In the URL: the source (platform, seal, all) or the byte count."),
            Field("source", T.STRING, "platform (seal and all fall back to it).", default="platform"),
            Field("bytes", T.INT, "How many bytes (1 to 131072).", default=32),
            FORMAT,
        ),
        operations={"POST": Operation(random)},
    ),
    Path(
        "transit/random/:url_source/:url_bytes",
        "Random bytes from the platform's CSPRNG.",
        fields=(
            Field("url_source", T.STRING, "platform (seal and all fall back to it)."),
            Field("url_bytes", T.STRING, "How many bytes (1 to 131072)."),
            FORMAT,
        ),
        operations={"POST": Operation(random)},
    ),
    Path(
        "transit/hash(/:url_algorithm)",
        "Hash base64 input.",
        fields=(
            Field("url_algorithm", T.STRING, "In the URL: the algorithm; beats the body's."),
            Field(
                "algorithm",
                T.STRING,
                "sha2-224/256/384/512 or sha3-224/256/384/512; the URL's beats it.",
                default="sha2-256",
            ),
            Field("input", T.BASE64, "Base64 input."),
            Field("format", T.STRING, "Output encoding: hex (the default) or base64.", default="hex"),
        ),
        operations={"POST": Operation(hash_data)},
    ),
)
