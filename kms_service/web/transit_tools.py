"""/v1/transit/*: the mount's settings (config/keys, cache-config), data keys, random bytes and hashes.

Thin handlers over the key service; their schemas are in ``PATHS`` at the end.
"""

from __future__ import annotations

import base64
import os
from typing import Any

from cryptography.hazmat.primitives import hashes

from kms_service.errors import InvalidRequest
from kms_service.keyring import b64encode, new_datakey, validate_key_name
from kms_service.keytypes import HASH_ALGORITHMS, EncryptOptions
from kms_service.web.framework import Call, Field, Operation, Path
from kms_service.web.framework import FieldType as T
from kms_service.web.transit import usable_key, using

MAX_RANDOM_BYTES = 128 * 1024
RANDOM_SOURCES = ("platform", "seal", "all")
# transit/hash takes Vault's hash names except sha1.
HASHES = {name: algorithm for name, algorithm in HASH_ALGORITHMS.items() if name != "sha1"}


async def read_keys_config(call: Call, args: dict[str, Any]) -> dict[str, Any]:
    return {"disable_upsert": (await call.keys.mount_settings())["disable_upsert"]}


async def write_keys_config(call: Call, args: dict[str, Any]) -> dict[str, Any]:
    if args["disable_upsert"] is not None:
        await call.keys.set_mount_settings(disable_upsert=args["disable_upsert"])
    return await read_keys_config(call, args)


async def read_cache_config(call: Call, args: dict[str, Any]) -> dict[str, Any]:
    return {"size": (await call.keys.mount_settings())["cache_size"]}


async def write_cache_config(call: Call, args: dict[str, Any]) -> dict[str, Any]:
    size = args["size"]
    if size < 0 or 0 < size < 10:
        raise InvalidRequest("size must be 0 or a value greater or equal to 10")
    await call.keys.set_mount_settings(cache_size=size)
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

PATHS = (
    Path(
        "transit/config/keys",
        "The mount's key settings: disable_upsert (no key is created by encrypt or a key write to a new name).",
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
