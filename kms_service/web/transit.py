"""/v1/transit/*: keys, rotate, config, encrypt, decrypt, rewrap, sign, verify.

Thin by design: the handlers get typed values, call the key service and the Key model, shape Vault's
response. Each path's schema and operations are in ``PATHS`` at the end (Vault's ``framework.Path``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from kms_service.errors import InvalidRequest, NotFound
from kms_service.keyring import Key, b64encode, parse_versioned, validate_key_name
from kms_service.keytypes import HASH_ALGORITHMS, MARSHALING_ALGORITHMS, EncryptOptions, SignOptions
from kms_service.service import KeyConfigChange
from kms_service.web.framework import Batch, Call, Field, Items, Operation, Path
from kms_service.web.framework import FieldType as T
from kms_service.web.replies import Reply

_SALT_LENGTH_RE = re.compile(r"auto|hash|-1|[0-9]{1,5}", re.ASCII)


async def _key(call: Call, missing: str, versions: Iterable[int] = (0,)) -> Key:
    """The path's key, with the crypto objects of ``versions`` built (0 = latest), loaded once per request."""
    key = await call.kms.keys.get(call.params["name"], tuple(versions) or (0,))
    if key is None:
        raise InvalidRequest(missing)
    return key


# -- keys ---------------------------------------------------------------------------------------------


async def read_key(call: Call, args: dict[str, Any]) -> dict[str, Any]:
    key = await call.kms.keys.get(call.params["name"])
    if key is None:
        raise NotFound()
    return key.body()


async def list_keys(call: Call, args: dict[str, Any]) -> dict[str, Any]:
    names = await call.kms.keys.names()
    if not names:
        raise NotFound()
    return {"keys": names}


async def rotate_key(call: Call, args: dict[str, Any]) -> dict[str, Any]:
    key = await call.kms.keys.rotate(call.params["name"])
    return key.body()


async def configure_key(call: Call, args: dict[str, Any]) -> Reply:
    change = KeyConfigChange(
        min_decryption_version=args["min_decryption_version"],
        min_encryption_version=args["min_encryption_version"],
        deletion_allowed=args["deletion_allowed"],
        exportable=args["exportable"],
        allow_plaintext_backup=args["allow_plaintext_backup"],
    )
    key, warnings = await call.kms.keys.configure(call.params["name"], change)
    return Reply(key.body(), warnings=warnings)


def _no_auto_rotation(value: Any) -> None:
    if value not in (0, "0", "0s"):
        raise InvalidRequest("auto_rotate_period is not supported by this server yet; rotate explicitly")


# -- encryption ---------------------------------------------------------------------------------------


async def encrypt(call: Call, args: dict[str, Any], items: Items) -> None:
    key = await _key(call, "encryption key not found", set(items.map(lambda item: item["key_version"])))

    def one(item: dict[str, Any]) -> dict[str, Any]:
        options = EncryptOptions(associated_data=item["associated_data"])
        ciphertext, version = key.encrypt(item["plaintext"], options, item["key_version"])
        return {"ciphertext": ciphertext, "key_version": version}

    items.respond(one)


def _ciphertext_version(item: dict[str, Any]) -> int:
    return parse_versioned(item["ciphertext"], "ciphertext").version


async def decrypt(call: Call, args: dict[str, Any], items: Items) -> None:
    versions = items.map(_ciphertext_version)
    key = await _key(call, "encryption key not found", set(versions))

    def one(item: dict[str, Any]) -> dict[str, Any]:
        options = EncryptOptions(associated_data=item["associated_data"])
        return {"plaintext": b64encode(key.decrypt(item["ciphertext"], options))}

    items.respond(one)


async def rewrap(call: Call, args: dict[str, Any], items: Items) -> None:
    versions = items.map(_ciphertext_version)
    targets = items.map(lambda item: item["key_version"])
    key = await _key(call, "encryption key not found", {*versions, *targets})

    def one(item: dict[str, Any]) -> dict[str, Any]:
        options = EncryptOptions(associated_data=item["associated_data"])
        ciphertext, version = key.rewrap(item["ciphertext"], options, item["key_version"])
        return {"ciphertext": ciphertext, "key_version": version}

    items.respond(one)


def _context_everywhere_or_nowhere(items: list[dict[str, Any]]) -> None:
    if len({bool(item.get("context")) for item in items}) > 1:
        raise InvalidRequest("context should be set either in all the request blocks or in none")


# -- signatures ---------------------------------------------------------------------------------------


def _signing_options(call: Call, args: dict[str, Any]) -> SignOptions:
    hash_name = call.params.get("hash") or args["hash_algorithm"] or args["algorithm"] or "sha2-256"
    if hash_name not in HASH_ALGORITHMS:
        raise InvalidRequest(f"invalid hash algorithm; use one of {', '.join(HASH_ALGORITHMS)}")
    marshaling = args["marshaling_algorithm"] or "asn1"
    if marshaling not in MARSHALING_ALGORITHMS:
        raise InvalidRequest("invalid marshaling type; use asn1 or jws")
    # RSA-only options: validated like Vault, no effect on ECDSA.
    if args["signature_algorithm"] not in (None, "", "pss", "pkcs1v15"):
        raise InvalidRequest("invalid signature_algorithm; use pss or pkcs1v15")
    if args["salt_length"] is not None and not _SALT_LENGTH_RE.fullmatch(args["salt_length"]):
        raise InvalidRequest("salt length neither 'auto', 'hash', nor an int")
    return SignOptions(hash_algorithm=hash_name, prehashed=args["prehashed"], marshaling=marshaling)


async def sign(call: Call, args: dict[str, Any], items: Items) -> None:
    options = _signing_options(call, args)
    key = await _key(call, "signing key not found", (args["key_version"],))
    if not key.key_type.supports_signing:  # the whole request, not each item (Vault)
        raise InvalidRequest(f"key type {key.key_type.name} does not support signing")

    def one(item: dict[str, Any]) -> dict[str, Any]:
        signature, version = key.sign(item["input"], options, args["key_version"])
        return {"signature": signature, "key_version": version}

    items.respond(one)


def _signature_version(item: dict[str, Any]) -> int:
    return parse_versioned(item["signature"], "signature").version


async def verify(call: Call, args: dict[str, Any], items: Items) -> None:
    options = _signing_options(call, args)
    versions = items.map(_signature_version)
    key = await _key(call, "signature verification key not found", set(versions))
    if not key.key_type.supports_signing:
        raise InvalidRequest(f"key type {key.key_type.name} does not support verification")
    items.respond(lambda item: {"valid": key.verify(item["input"], item["signature"], options)})


_HMAC_REFUSED = "HMAC verification is not supported by this server yet"


def _signature_in_every_item(items: list[dict[str, Any]]) -> None:
    """Vault's rule: all items carry 'signature' or all carry 'hmac'."""
    signatures = sum("signature" in item for item in items)
    hmacs = sum("hmac" in item and "signature" not in item for item in items)
    if signatures and hmacs:
        raise InvalidRequest("elements of batch_input must all provide 'signature' or all provide 'hmac'")
    if signatures + hmacs < len(items):
        if signatures:
            raise InvalidRequest("some elements of batch_input are missing 'signature'")
        if hmacs:
            raise InvalidRequest("some elements of batch_input are missing 'hmac'")
        raise InvalidRequest("no batch_input elements have 'signature' or 'hmac'")
    if hmacs:
        raise InvalidRequest(_HMAC_REFUSED)


# -- the paths ----------------------------------------------------------------------------------------

NAME = Field("name", T.STRING, "Name of the key.", check=validate_key_name)
# Caller-chosen nonces break AEAD security (CVE-2023-4680); never accepted.
NONCE = Field(
    "nonce",
    T.BASE64,
    "Refused: nonces are always chosen by the server.",
    batch=True,
    refuse="provided nonce not allowed for this key",
)
CONTEXT = Field(
    "context",
    T.BASE64,
    "Base64 context for key derivation. Keys here are never derived: validated, then unused.",
    batch=True,
)
ASSOCIATED_DATA = Field(
    "associated_data",
    T.BASE64,
    "Base64 associated data (AEAD): authenticated with the ciphertext, not encrypted; decryption needs it again.",
    default=b"",
    batch=True,
)
CIPHERTEXT = Field(
    "ciphertext",
    T.STRING,
    "A ciphertext, 'vault-kms:v<N>:...' (or 'vault:v<N>:...').",
    batch=True,
    required="missing ciphertext to decrypt",
)
ENCRYPT_KEY_VERSION = Field(
    "key_version",
    T.INT,
    "The key version to encrypt with: 0 (the latest) or at least the key's min_encryption_version.",
    default=0,
    batch=True,
)
KEY_BODY = (
    Field("name", T.STRING, "The key's name."),
    Field("type", T.STRING, "The key type: chacha20-poly1305 or ecdsa-p256."),
    Field("latest_version", T.INT, "The newest version (versions start at 1)."),
    Field("min_decryption_version", T.INT, "The oldest version that may decrypt or verify."),
    Field("min_encryption_version", T.INT, "The oldest version that may encrypt or sign (0: latest only)."),
    Field("min_available_version", T.INT, "Always 0 (no trim)."),
    Field("deletion_allowed", T.BOOL, "Whether the key may be deleted."),
    Field("exportable", T.BOOL, "Whether the key may be exported."),
    Field("allow_plaintext_backup", T.BOOL, "Whether a plaintext backup is allowed."),
    Field("derived", T.BOOL, "Always false."),
    Field("supports_encryption", T.BOOL, "Whether the key encrypts."),
    Field("supports_decryption", T.BOOL, "Whether the key decrypts."),
    Field("supports_signing", T.BOOL, "Whether the key signs."),
    Field("supports_derivation", T.BOOL, "Whether the key type supports derivation."),
    Field("auto_rotate_period", T.INT, "Always 0 (rotate explicitly)."),
    Field("imported_key", T.BOOL, "Always false."),
    Field(
        "keys",
        T.MAP,
        "Live versions: version → creation time (unix seconds) for symmetric keys, or → {name, public_key, "
        "certificate_chain, creation_time} for ECDSA.",
    ),
)
CIPHERTEXT_OUT = Field("ciphertext", T.STRING, "The ciphertext, 'vault-kms:v<N>:<base64>'.")
KEY_VERSION_OUT = Field("key_version", T.INT, "The key version used.")

_HASH_ALGORITHMS = ", ".join(HASH_ALGORITHMS)
SIGNING_FIELDS = (
    Field("hash_algorithm", T.STRING, f"Hash algorithm ({_HASH_ALGORITHMS}); the URL's beats it.", default=""),
    Field("algorithm", T.STRING, "Deprecated: use hash_algorithm.", default="", deprecated=True),
    Field("prehashed", T.BOOL, "The input is already a digest of the hash algorithm's length.", default=False),
    Field("marshaling_algorithm", T.STRING, "Signature encoding: asn1 (DER, the default) or jws (r||s).", default=""),
    Field("signature_algorithm", T.STRING, "RSA only (pss or pkcs1v15): validated, no effect on ECDSA."),
    Field("salt_length", T.STRING, "RSA PSS only (auto, hash or an integer): validated, no effect on ECDSA."),
)
HASH = Field("hash", T.STRING, f"Hash algorithm ({_HASH_ALGORITHMS}); beats hash_algorithm in the body.")
SIGN_INPUT = Field(
    "input", T.BASE64, "Base64 data to sign (absent: empty).", default=b"", batch=True, missing_item="missing input"
)
VERIFY_INPUT = Field(
    "input",
    T.BASE64,
    "Base64 data the signature is over (absent: empty).",
    default=b"",
    batch=True,
    missing_item="missing input",
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
        "Read a key: its configuration and versions (ECDSA versions with their public key).",
        fields=(NAME,),
        operations={"GET": Operation(read_key, returns=KEY_BODY)},
        description="A missing key is a 404 with no error message, as in Vault.",
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
                "Only 0 (off) is accepted: rotate explicitly.",
                check=_no_auto_rotation,
            ),
            Field("min_decryption_version", T.INT, "The oldest version that may decrypt or verify."),
            Field("min_encryption_version", T.INT, "The oldest version that may encrypt or sign (0: latest only)."),
            Field("deletion_allowed", T.BOOL, "Whether the key may be deleted."),
            Field("exportable", T.BOOL, "Whether the key may be exported (can only be turned on)."),
            Field("allow_plaintext_backup", T.BOOL, "Whether a plaintext backup is allowed (can only be turned on)."),
        ),
        operations={"POST": Operation(configure_key, returns=KEY_BODY)},
    ),
    Path(
        "transit/encrypt/:name",
        "Encrypt base64 plaintext (or a batch of them) with the named key.",
        fields=(
            NAME,
            NONCE,
            Field(
                "plaintext",
                T.BASE64,
                "Base64 plaintext ('' is allowed).",
                batch=True,
                required="missing plaintext to encrypt",
            ),
            CONTEXT,
            ASSOCIATED_DATA,
            ENCRYPT_KEY_VERSION,
            Field("type", T.STRING, "Key upsert only; keys are not upserted here: ignored.", ignored=True),
            Field("convergent_encryption", T.BOOL, "Key upsert only: ignored.", ignored=True),
        ),
        operations={
            "POST": Operation(
                encrypt,
                batch=Batch(status_from_items=True, check=_context_everywhere_or_nowhere),
                returns=(CIPHERTEXT_OUT, KEY_VERSION_OUT),
            )
        },
    ),
    Path(
        "transit/decrypt/:name",
        "Decrypt a ciphertext (or a batch of them) with the named key.",
        fields=(NAME, NONCE, CIPHERTEXT, CONTEXT, ASSOCIATED_DATA),
        operations={
            "POST": Operation(
                decrypt,
                batch=Batch(
                    error_result={"plaintext": ""}, status_from_items=True, check=_context_everywhere_or_nowhere
                ),
                returns=(Field("plaintext", T.BASE64, "The base64 plaintext."),),
            )
        },
    ),
    Path(
        "transit/rewrap/:name",
        "Decrypt a ciphertext and encrypt it again with the latest (or the given) key version.",
        fields=(NAME, NONCE, CIPHERTEXT, CONTEXT, ASSOCIATED_DATA, ENCRYPT_KEY_VERSION),
        operations={
            "POST": Operation(
                rewrap,
                batch=Batch(check=_context_everywhere_or_nowhere),
                returns=(CIPHERTEXT_OUT, KEY_VERSION_OUT),
            )
        },
    ),
    Path(
        "transit/sign/:name(/:hash)",
        "Sign base64 input (or a batch of inputs) with the named key.",
        fields=(
            NAME,
            HASH,
            NONCE,
            SIGN_INPUT,
            CONTEXT,
            *SIGNING_FIELDS,
            Field(
                "key_version",
                T.INT,
                "The key version to sign with: 0 (the latest) or at least the key's min_encryption_version.",
                default=0,
            ),
        ),
        operations={
            "POST": Operation(
                sign,
                batch=Batch(error_result={"key_version": 0}),
                returns=(Field("signature", T.STRING, "The signature, 'vault-kms:v<N>:<base64>'."), KEY_VERSION_OUT),
            )
        },
    ),
    Path(
        "transit/verify/:name(/:hash)",
        "Verify a signature (or a batch of them) with the named key: 200 with valid true or false.",
        fields=(
            NAME,
            HASH,
            NONCE,
            VERIFY_INPUT,
            CONTEXT,
            *SIGNING_FIELDS,
            Field("hmac", T.STRING, "Refused: HMAC is not supported yet.", batch=True, refuse=_HMAC_REFUSED),
            Field(
                "signature",
                T.STRING,
                "The signature, 'vault-kms:v<N>:...' (or 'vault:v<N>:...').",
                batch=True,
                required="neither a 'signature' nor an 'hmac' were given to verify",
            ),
        ),
        operations={
            "POST": Operation(
                verify,
                batch=Batch(error_result={"valid": False}, check=_signature_in_every_item),
                returns=(Field("valid", T.BOOL, "Whether the signature is valid for the input."),),
            )
        },
    ),
)
