"""/v1/transit/*: encrypt, decrypt, rewrap, sign, verify, hmac, cmac (key management: ``transit_keys``).

Thin by design: the handlers get typed values, call the key service and the Key model, shape Vault's
response. Each path's schema and operations are in ``PATHS`` at the end (Vault's ``framework.Path``).
An operation that spends from a key version's counts runs through ``UsageCounter.using``, which counts it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from contextlib import AbstractAsyncContextManager
from dataclasses import replace
from typing import Any

from kms_service.errors import InvalidRequest, UserError
from kms_service.keyring import CMAC_MAX_LENGTH, Key, b64encode, version_of, versioned_pair
from kms_service.keytypes import HASH_ALGORITHMS, EncryptOptions, SignOptions
from kms_service.service.keys import SOFT_DELETED
from kms_service.service.usage import KeyUse
from kms_service.web import transit_keys
from kms_service.web.execution import Items
from kms_service.web.framework import Batch, Call, Field, Operation, Path
from kms_service.web.framework import FieldType as T
from kms_service.web.transit_keys import DEFAULT_KEY_TYPE, NAME, key_exists, new_key_settings

# The types encrypt may create (upsert), as in OpenBao.
UPSERT_KEY_TYPES = ("aes128-gcm96", "aes256-gcm96", "chacha20-poly1305", "xchacha20-poly1305")


async def usable_key(call: Call, missing: str, versions: Iterable[int] = (0,)) -> Key:
    """The path's key, with the crypto objects of ``versions`` built (0 = latest), loaded once per request."""
    wanted = tuple(versions) or (0,)
    key = call.found_key  # this request's existence check read it a moment ago
    if key is None or key.name != call.params["name"] or max(wanted) > key.latest_version:
        key = await call.keys.get(call.params["name"], wanted)
    else:
        await call.keys.prepare(key, wanted)
    if key is None:
        raise InvalidRequest(missing)
    call.key_type = key.key_type.name  # for the crypto operations metric
    if key.settings.soft_deleted:
        raise InvalidRequest(SOFT_DELETED)
    return key


def using(call: Call, key: Key) -> AbstractAsyncContextManager[KeyUse]:
    """The request's counted use of ``key`` (``UsageCounter.using``): a nonce budget running out is a warning
    in the response, and the path's mount rotates the key past it."""
    return call.kms.usage.using(key, call.keys, call.add_warning)


# -- encryption ---------------------------------------------------------------------------------------


async def encrypt(call: Call, args: dict[str, Any], items: Items) -> None:
    if call.existed is False:
        # The existence check found no key and the token holds `create`: Vault's upsert, unless disabled.
        if (await call.keys.mount_settings())["disable_upsert"]:
            raise InvalidRequest("encryption key not found")
        # Vault makes the new key derived when the request carries a context (context is all or none).
        derived = any(context is not None for context in items.field("context"))
        if args["convergent_encryption"] and not derived:
            raise InvalidRequest("convergent encryption requires derivation to be enabled, so context is required")
        upsert = {**args, "derived": derived}
        type_name, settings, key_size = new_key_settings(upsert)
        if type_name not in UPSERT_KEY_TYPES:
            # Vault and OpenBao upsert symmetric keys only (RSA generation is no side effect of encrypt).
            raise InvalidRequest("unknown key type for an encrypt upsert: aes128/aes256-gcm96 or (x)chacha20-poly1305")
        await call.keys.upsert(call.params["name"], type_name, settings, key_size)
    key = await usable_key(call, "encryption key not found", set(items.field("key_version")))
    use: KeyUse

    def one(item: dict[str, Any]) -> dict[str, Any]:
        ciphertext, version = use.encrypt(item["plaintext"], _encrypt_options(item), item["key_version"])
        return {"ciphertext": ciphertext, "key_version": version}

    def many(values: list[dict[str, Any]]) -> list[dict[str, Any] | None]:
        """The items without options of their own, per requested version, encrypted together; the others
        (and a version ``encrypt_many`` refuses: each item then gets that error from ``one``) are None."""
        results: list[dict[str, Any] | None] = [None] * len(values)
        plain: dict[int, list[int]] = {}
        for position, item in enumerate(values):
            if _encrypt_options(item) is NO_ENCRYPT_OPTIONS:
                plain.setdefault(item["key_version"], []).append(position)
        for requested, positions in plain.items():
            try:
                ciphertexts, version = use.encrypt_many(
                    [values[p]["plaintext"] for p in positions], NO_ENCRYPT_OPTIONS, requested
                )
            except UserError:
                continue
            for position, ciphertext in zip(positions, ciphertexts, strict=True):
                results[position] = {"ciphertext": ciphertext, "key_version": version}
        return results

    async with using(call, key) as use:
        await items.respond(one, many=many if key.key_type.encrypts_many else None)


def _ciphertext_version(item: dict[str, Any]) -> int:
    return version_of(item["ciphertext"], "ciphertext")


async def decrypt(call: Call, args: dict[str, Any], items: Items) -> None:
    parsed: dict[str, tuple[int, str]] = {}  # each ciphertext parsed once: here for its version, in many to open it

    def version(item: dict[str, Any]) -> int:
        ciphertext = item["ciphertext"]
        parsed[ciphertext] = found = versioned_pair(ciphertext, "ciphertext")
        return found[0]

    versions = items.map(version)
    key = await usable_key(call, "encryption key not found", set(versions))

    def one(item: dict[str, Any]) -> dict[str, Any]:
        return {"plaintext": b64encode(key.decrypt(item["ciphertext"], _encrypt_options(item)))}

    def many(values: list[dict[str, Any]]) -> list[dict[str, Any] | None]:
        """The items without options of their own, opened together; the others (and those ``decrypt_many``
        refuses: each then gets its error from ``one``) are None."""
        results: list[dict[str, Any] | None] = [None] * len(values)
        plain = [position for position, item in enumerate(values) if _encrypt_options(item) is NO_ENCRYPT_OPTIONS]
        opened = key.decrypt_many([values[p]["ciphertext"] for p in plain], NO_ENCRYPT_OPTIONS, parsed)
        for position, plaintext in zip(plain, opened, strict=True):
            if plaintext is not None:
                results[position] = {"plaintext": b64encode(plaintext)}
        return results

    await items.respond(one, slow="decrypt" in key.key_type.slow_operations, many=many)


async def rewrap(call: Call, args: dict[str, Any], items: Items) -> None:
    versions = items.map(_ciphertext_version)
    targets = items.field("key_version")
    key = await usable_key(call, "encryption key not found", {*versions, *targets})
    use: KeyUse

    def one(item: dict[str, Any]) -> dict[str, Any]:
        decrypting = _encrypt_options(item, item["decrypt_padding_scheme"])
        encrypting = _encrypt_options(item, item["encrypt_padding_scheme"])
        ciphertext, version = use.rewrap(item["ciphertext"], decrypting, item["key_version"], encrypting)
        return {"ciphertext": ciphertext, "key_version": version}

    async with using(call, key) as use:
        await items.respond(one, slow="decrypt" in key.key_type.slow_operations)


# An item with no associated data, context or padding scheme (most): one shared object, not one per item.
NO_ENCRYPT_OPTIONS = EncryptOptions()


def _encrypt_options(item: dict[str, Any], padding_scheme: str | None = None) -> EncryptOptions:
    padding = padding_scheme if padding_scheme is not None else item.get("padding_scheme") or ""
    associated_data, context = item["associated_data"], item["context"]
    if not associated_data and context is None and not padding:
        return NO_ENCRYPT_OPTIONS
    return EncryptOptions(associated_data=associated_data, context=context, padding_scheme=padding)


def _context_everywhere_or_nowhere(items: list[dict[str, Any]]) -> None:
    if len({bool(item.get("context")) for item in items}) > 1:
        raise InvalidRequest("context should be set either in all the request blocks or in none")


# -- signatures ---------------------------------------------------------------------------------------


def _signing_options(call: Call, args: dict[str, Any]) -> SignOptions:
    """The request's signing options, checked once (Vault's order); each item adds its own context."""
    options = SignOptions(
        hash_algorithm=call.params.get("hash") or args["hash_algorithm"] or args["algorithm"] or "sha2-256",
        prehashed=args["prehashed"],
        marshaling=args["marshaling_algorithm"] or "asn1",
        signature_algorithm=args["signature_algorithm"] or "pss",
        salt_length=args["salt_length"] if args["salt_length"] is not None else "auto",
    )
    options.check()
    return options


async def sign(call: Call, args: dict[str, Any], items: Items) -> None:
    options = _signing_options(call, args)
    key = await usable_key(call, "signing key not found", (args["key_version"],))
    if not key.key_type.supports_signing:  # the whole request, not each item (Vault)
        raise InvalidRequest(f"key type {key.key_type.name} does not support signing")
    use: KeyUse

    def one(item: dict[str, Any]) -> dict[str, Any]:
        item_options = replace(options, context=item["context"])
        signature, version = use.sign(item["input"], item_options, args["key_version"])
        result: dict[str, Any] = {"signature": signature, "key_version": version}
        public_key = key.derived_public_key(item["context"], version)
        if public_key is not None:
            # Vault spells it publickey in batch results and public_key otherwise.
            result["publickey" if items.batched else "public_key"] = public_key
        return result

    async with using(call, key) as use:
        await items.respond(one, slow="sign" in key.key_type.slow_operations)


def _signature_version(item: dict[str, Any]) -> int:
    return version_of(item["signature"], "signature")


def _verified_version(item: dict[str, Any]) -> int:
    if item["hmac"] is not None:
        return version_of(item["hmac"], "HMAC")
    if item["cmac"] is not None:
        return version_of(item["cmac"], "CMAC")
    if item["signature"] is None:
        raise InvalidRequest("neither a 'signature' nor an 'hmac' were given to verify")
    return _signature_version(item)


async def verify(call: Call, args: dict[str, Any], items: Items) -> None:
    """A signature, or (with ``hmac``) an HMAC: 200 with valid true or false either way."""
    options = _signing_options(call, args)
    versions = items.map(_verified_version)
    key = await usable_key(call, "signature verification key not found", set(versions))
    # Newest Vault: the URL's hash, else hash_algorithm, else algorithm.
    hmac_algorithm = call.params.get("hash") or args["hash_algorithm"] or args["algorithm"] or "sha2-256"
    signatures = [item for item in items.values if item and item["hmac"] is None and item["cmac"] is None]
    if signatures and not key.key_type.supports_signing:
        raise InvalidRequest(f"key type {key.key_type.name} does not support verification")

    def one(item: dict[str, Any]) -> dict[str, Any]:
        if item["hmac"] is not None:
            return {"valid": key.verify_hmac(item["input"], item["hmac"], hmac_algorithm)}
        if item["cmac"] is not None:
            return {"valid": key.verify_cmac(item["input"], item["cmac"], args["mac_length"])}
        return {"valid": key.verify(item["input"], item["signature"], replace(options, context=item["context"]))}

    await items.respond(one, slow=bool(signatures) and "verify" in key.key_type.slow_operations)


async def cmac(call: Call, args: dict[str, Any], items: Items) -> None:
    """Beyond Vault's open-source transit (Vault Enterprise's cmac/:name): AES-CMAC with an aes*-cmac key."""
    url_length = call.params.get("url_mac_length")
    if url_length is not None and not re.fullmatch(r"[0-9]{1,3}", url_length, re.ASCII):
        raise InvalidRequest("mac_length in the URL must be a number of bytes")
    mac_length = int(url_length) if url_length is not None else args["mac_length"] or CMAC_MAX_LENGTH
    key = await usable_key(call, "CMAC key not found", (args["key_version"],))

    def one(item: dict[str, Any]) -> dict[str, Any]:
        value, version = key.cmac(item["input"], args["key_version"], mac_length)
        return {"cmac": value, "key_version": version}

    await items.respond(one)


async def hmac(call: Call, args: dict[str, Any], items: Items) -> None:
    algorithm = call.params.get("url_algorithm") or args["algorithm"]
    key = await usable_key(call, "HMAC key not found", (args["key_version"],))

    def one(item: dict[str, Any]) -> dict[str, Any]:
        value, _version = key.hmac(item["input"], algorithm, args["key_version"])
        return {"hmac": value}

    def many(values: list[dict[str, Any]]) -> list[dict[str, Any] | None]:
        """Every item at once (the version, its key and the hash are the request's); refused, each item
        gets the error from ``one``."""
        try:
            hmacs, _version = key.hmac_many([item["input"] for item in values], algorithm, args["key_version"])
        except UserError:
            return [None] * len(values)
        return [{"hmac": value} for value in hmacs]

    await items.respond(one, many=many)


def _signature_in_every_item(items: list[dict[str, Any]]) -> None:
    """Vault's rule: all items carry 'signature' or all carry 'hmac'."""
    signatures = sum("signature" in item for item in items)
    # A CMAC counts with the HMACs: both are MACs checked with the key's own MAC key (Vault has no cmac here).
    hmacs = sum(("hmac" in item or "cmac" in item) and "signature" not in item for item in items)
    if signatures and hmacs:
        raise InvalidRequest("elements of batch_input must all provide 'signature' or all provide 'hmac'")
    if signatures + hmacs < len(items):
        if signatures:
            raise InvalidRequest("some elements of batch_input are missing 'signature'")
        if hmacs:
            raise InvalidRequest("some elements of batch_input are missing 'hmac'")
        raise InvalidRequest("no batch_input elements have 'signature' or 'hmac'")


# -- the paths ----------------------------------------------------------------------------------------

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
    "Base64 context: required by derived keys (each context has its own key); ignored by the others.",
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

PADDING_SCHEME = Field("padding_scheme", T.STRING, "RSA keys: oaep (the default) or pkcs1v15.", batch=True)
HMAC_INPUT = Field("input", T.BASE64, "Base64 data to HMAC.", default=b"", batch=True, missing_item="missing input")

PATHS = (
    Path(
        "transit/cmac/:name(/:url_mac_length)",
        "AES-CMAC (NIST SP 800-38B) of base64 input (or a batch) with an aes128-cmac or aes256-cmac key.",
        fields=(
            NAME,
            Field("url_mac_length", T.STRING, "In the URL: the tag length in bytes; beats the body's."),
            Field("mac_length", T.INT, "The tag length in bytes, 8 to 16 (default 16)."),
            Field("key_version", T.INT, "The key version (0: latest).", default=0),
            HMAC_INPUT,
        ),
        operations={
            "POST": Operation(
                cmac,
                crypto="cmac",
                batch=Batch(),
                returns=(Field("cmac", T.STRING, "The CMAC, 'vault-kms:v<N>:<base64>'."), KEY_VERSION_OUT),
            )
        },
    ),
    Path(
        "transit/hmac/:name(/:url_algorithm)",
        "HMAC base64 input (or a batch of inputs) with the key version's HMAC key.",
        fields=(
            NAME,
            Field("url_algorithm", T.STRING, "In the URL: the hash algorithm; beats the body's."),
            Field("algorithm", T.STRING, "sha2-224/256/384/512 or sha3-224/256/384/512.", default="sha2-256"),
            Field("key_version", T.INT, "The key version (0: latest).", default=0),
            HMAC_INPUT,
        ),
        operations={
            "POST": Operation(
                hmac,
                crypto="hmac",
                batch=Batch(),
                returns=(Field("hmac", T.STRING, "The HMAC, 'vault-kms:v<N>:<base64>'."),),
            )
        },
    ),
    *transit_keys.PATHS,  # Vault's order: the key paths between the MACs and encrypt
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
            PADDING_SCHEME,
            Field("type", T.STRING, f"Upsert only: the new key's type (default {DEFAULT_KEY_TYPE})."),
            Field("convergent_encryption", T.BOOL, "Upsert only: make the new key convergent (needs a context)."),
        ),
        operations={
            "POST": Operation(
                encrypt,
                crypto="encrypt",
                existence=key_exists,
                batch=Batch(status_from_items=True, check=_context_everywhere_or_nowhere),
                returns=(CIPHERTEXT_OUT, KEY_VERSION_OUT),
            )
        },
    ),
    Path(
        "transit/decrypt/:name",
        "Decrypt a ciphertext (or a batch of them) with the named key.",
        fields=(NAME, NONCE, CIPHERTEXT, CONTEXT, ASSOCIATED_DATA, PADDING_SCHEME),
        operations={
            "POST": Operation(
                decrypt,
                crypto="decrypt",
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
        fields=(
            NAME,
            NONCE,
            CIPHERTEXT,
            CONTEXT,
            ASSOCIATED_DATA,
            ENCRYPT_KEY_VERSION,
            Field(
                "decrypt_padding_scheme", T.STRING, "RSA keys: the padding the ciphertext was made with.", batch=True
            ),
            Field("encrypt_padding_scheme", T.STRING, "RSA keys: the padding to encrypt with.", batch=True),
        ),
        operations={
            "POST": Operation(
                rewrap,
                crypto="rewrap",
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
                crypto="sign",
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
            Field("hmac", T.STRING, "An HMAC to verify instead of a signature, 'vault-kms:v<N>:...'.", batch=True),
            Field("cmac", T.STRING, "An AES-CMAC to verify (aes*-cmac keys), 'vault-kms:v<N>:...'.", batch=True),
            Field("mac_length", T.INT, "With cmac: the expected tag length (default: the given tag's)."),
            Field("signature", T.STRING, "The signature, 'vault-kms:v<N>:...' (or 'vault:v<N>:...').", batch=True),
        ),
        operations={
            "POST": Operation(
                verify,
                crypto="verify",
                batch=Batch(error_result={"valid": False}, check=_signature_in_every_item),
                returns=(Field("valid", T.BOOL, "Whether the signature is valid for the input."),),
            )
        },
    ),
)
