"""Handlers for /v1/transit/*: keys, rotate, config, encrypt, decrypt, rewrap, sign, verify.

Thin by design: read fields, call the key service and the Key model, shape Vault's response.
"""

from __future__ import annotations

import re

from kms_service.errors import InvalidRequest, NotFound
from kms_service.keyring import Key, b64encode, parse_versioned
from kms_service.keytypes import HASH_ALGORITHMS, MARSHALING_ALGORITHMS, EncryptOptions, SignOptions
from kms_service.service import KeyConfigChange
from kms_service.web.fields import Fields
from kms_service.web.replies import Reply
from kms_service.web.routing import Call, Router

_SALT_LENGTH_RE = re.compile(r"auto|hash|-1|[0-9]{1,5}", re.ASCII)


async def _key(call: Call, missing: str, *versions: int) -> Key:
    """The path's key, with the crypto objects of ``versions`` ready (0 = latest)."""
    key = await call.kms.keys.get(call.params["name"], versions or (0,))
    if key is None:
        raise InvalidRequest(missing)
    return key


def _refuse_unsupported(fields: Fields) -> None:
    if fields.present("batch_input"):
        raise InvalidRequest("batch_input is not supported by this server yet")
    if fields.present("nonce"):
        # Caller-chosen nonces break AEAD security (CVE-2023-4680); never accepted.
        raise InvalidRequest("provided nonce not allowed for this key")


def _context(fields: Fields) -> None:
    """Keys here are never derived; a context is validated then ignored, as Vault does."""
    fields.base64("context")


# -- keys ---------------------------------------------------------------------------------------------


async def read_key(call: Call) -> Reply:
    key = await call.kms.keys.get(call.params["name"])
    if key is None:
        raise NotFound()
    return Reply(key.body())


async def list_keys(call: Call) -> Reply:
    names = await call.kms.keys.names()
    if not names:
        raise NotFound()
    return Reply({"keys": names})


async def rotate_key(call: Call) -> Reply:
    await call.fields()  # reject a malformed body before changing anything
    key = await call.kms.keys.rotate(call.params["name"])
    return Reply(key.body())


async def configure_key(call: Call) -> Reply:
    fields = await call.fields()
    if fields.present("auto_rotate_period") and fields.raw("auto_rotate_period") not in (0, "0", "0s"):
        raise InvalidRequest("auto_rotate_period is not supported by this server yet; rotate explicitly")
    change = KeyConfigChange(
        min_decryption_version=fields.integer("min_decryption_version", None),
        min_encryption_version=fields.integer("min_encryption_version", None),
        deletion_allowed=fields.boolean("deletion_allowed"),
        exportable=fields.boolean("exportable"),
        allow_plaintext_backup=fields.boolean("allow_plaintext_backup"),
    )
    key, warnings = await call.kms.keys.configure(call.params["name"], change)
    return Reply(key.body(), warnings=warnings)


# -- encryption ---------------------------------------------------------------------------------------


async def encrypt(call: Call) -> Reply:
    fields = await call.fields()
    _refuse_unsupported(fields)
    plaintext = fields.base64("plaintext", missing="missing plaintext to encrypt")
    _context(fields)
    associated_data = fields.base64("associated_data") or b""
    key_version = fields.integer("key_version")
    fields.raw("type"), fields.raw("convergent_encryption")  # upsert-only parameters; keys are not upserted
    key = await _key(call, "encryption key not found", key_version)
    ciphertext, version = key.encrypt(plaintext, EncryptOptions(associated_data=associated_data), key_version)
    return Reply({"ciphertext": ciphertext, "key_version": version})


def _ciphertext(fields: Fields) -> tuple[str, int]:
    ciphertext = fields.string("ciphertext")
    if not ciphertext:
        raise InvalidRequest("missing ciphertext to decrypt")
    return ciphertext, parse_versioned(ciphertext, "ciphertext").version


async def decrypt(call: Call) -> Reply:
    fields = await call.fields()
    _refuse_unsupported(fields)
    ciphertext, version = _ciphertext(fields)
    _context(fields)
    associated_data = fields.base64("associated_data") or b""
    key = await _key(call, "encryption key not found", version)
    return Reply({"plaintext": b64encode(key.decrypt(ciphertext, EncryptOptions(associated_data=associated_data)))})


async def rewrap(call: Call) -> Reply:
    fields = await call.fields()
    _refuse_unsupported(fields)
    ciphertext, version = _ciphertext(fields)
    _context(fields)
    associated_data = fields.base64("associated_data") or b""
    key_version = fields.integer("key_version")
    key = await _key(call, "encryption key not found", version, key_version)
    options = EncryptOptions(associated_data=associated_data)
    new_ciphertext, new_version = key.rewrap(ciphertext, options, key_version)
    return Reply({"ciphertext": new_ciphertext, "key_version": new_version})


# -- signatures ---------------------------------------------------------------------------------------


def _signing_options(call: Call, fields: Fields) -> tuple[bytes, SignOptions]:
    _refuse_unsupported(fields)
    data = fields.base64("input") or b""
    _context(fields)
    hash_name = call.params.get("hash") or fields.string("hash_algorithm") or fields.string("algorithm") or "sha2-256"
    if hash_name not in HASH_ALGORITHMS:
        raise InvalidRequest(f"invalid hash algorithm; use one of {', '.join(HASH_ALGORITHMS)}")
    prehashed = bool(fields.boolean("prehashed", False))
    marshaling = fields.string("marshaling_algorithm") or "asn1"
    if marshaling not in MARSHALING_ALGORITHMS:
        raise InvalidRequest("invalid marshaling type; use asn1 or jws")
    # RSA-only options: validated like Vault, no effect on ECDSA.
    if fields.string("signature_algorithm", "") not in ("", "pss", "pkcs1v15"):
        raise InvalidRequest("invalid signature_algorithm; use pss or pkcs1v15")
    salt_length = fields.string("salt_length")
    if salt_length is not None and not _SALT_LENGTH_RE.fullmatch(salt_length):
        raise InvalidRequest("salt length neither 'auto', 'hash', nor an int")
    return data, SignOptions(hash_algorithm=hash_name, prehashed=prehashed, marshaling=marshaling)


async def sign(call: Call) -> Reply:
    fields = await call.fields()
    data, options = _signing_options(call, fields)
    key_version = fields.integer("key_version")
    key = await _key(call, "signing key not found", key_version)
    signature, version = key.sign(data, options, key_version)
    return Reply({"signature": signature, "key_version": version})


async def verify(call: Call) -> Reply:
    fields = await call.fields()
    data, options = _signing_options(call, fields)
    if fields.present("hmac"):
        raise InvalidRequest("HMAC verification is not supported by this server yet")
    signature = fields.string("signature")
    if not signature:
        raise InvalidRequest("neither a 'signature' nor an 'hmac' were given to verify")
    version = parse_versioned(signature, "signature").version
    key = await _key(call, "signature verification key not found", version)
    return Reply({"valid": key.verify(data, signature, options)})


def setup_routes(router: Router) -> None:
    router.add("transit/keys", LIST=list_keys)
    router.add("transit/keys/:name", GET=read_key)
    router.add("transit/keys/:name/rotate", POST=rotate_key)
    router.add("transit/keys/:name/config", POST=configure_key)
    router.add("transit/encrypt/:name", POST=encrypt)
    router.add("transit/decrypt/:name", POST=decrypt)
    router.add("transit/rewrap/:name", POST=rewrap)
    router.add("transit/sign/:name", POST=sign)
    router.add("transit/sign/:name/:hash", POST=sign)
    router.add("transit/verify/:name", POST=verify)
    router.add("transit/verify/:name/:hash", POST=verify)
