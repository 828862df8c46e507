"""The ``Key`` model: an immutable snapshot of a named key as the database holds it (its type, its
``KeySettings``, its versions), Vault's version rules, and every operation on it (encrypt, sign, HMAC,
CMAC, export, ...) with Vault's checks in Vault's order. Pure; no I/O.

Mutations happen in storage inside a transaction; the cache then swaps in a new snapshot, so a failed write
never leaves a half-changed key in memory. Each version's crypto object is built lazily, on first use (the
service does that off the event loop).
"""

from __future__ import annotations

import hmac as hmac_lib
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from kms_service.byok import DEFAULT_BYOK_HASH, byok_hash, wrap_byok
from kms_service.errors import InvalidRequest, RefusedAsServerError, UserError
from kms_service.keyring.settings import KeySettings
from kms_service.keyring.wire import (
    b64decode_strict,
    b64encode,
    decode_signature,
    format_versioned,
    parse_hmac,
    parse_versioned,
    versioned_prefix,
    well_formed,
)
from kms_service.keytypes.base import (
    EXPORT_CERTIFICATE_CHAIN,
    EXPORT_ENCRYPTION_KEY,
    EXPORT_PUBLIC_KEY,
    EXPORT_SIGNING_KEY,
    EXPORT_TYPES,
    HASH_ALGORITHMS,
    MISSING_CONTEXT,
    EncryptOptions,
    KeyType,
    NonceSource,
    SignOptions,
    hmac_digest,
    parse_go_int,
)
from kms_service.material import KeyMaterial, Origin

KEY_NAME_RE = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,126}[A-Za-z0-9_])?", re.ASCII)


def validate_key_name(name: str) -> str:
    if not isinstance(name, str) or not KEY_NAME_RE.fullmatch(name):
        raise InvalidRequest(
            "invalid key name: use 1 to 128 ASCII letters, digits, '_', '-' or '.', "
            "starting and ending with a letter, digit or '_'"
        )
    return name


CMAC_MAX_LENGTH = 16
CMAC_MIN_LENGTH = 8  # NIST SP 800-38B: tags shorter than 64 bits need a careful analysis


def _check_mac_length(length: int) -> None:
    if not CMAC_MIN_LENGTH <= length <= CMAC_MAX_LENGTH:
        raise InvalidRequest(f"mac_length must be {CMAC_MIN_LENGTH} to {CMAC_MAX_LENGTH} bytes")


class KeyVersion:
    """One version: its stored material and, once first needed, its crypto object."""

    __slots__ = ("version", "created_at", "material", "_key_type", "_handle")

    def __init__(self, version: int, created_at: datetime, material: KeyMaterial, key_type: KeyType) -> None:
        self.version = version
        self.created_at = created_at
        self.material = material
        self._key_type = key_type
        self._handle: Any = None

    def __repr__(self) -> str:
        return f"KeyVersion({self.version}, loaded={self.loaded})"

    @property
    def key_type(self) -> KeyType:
        return self._key_type

    @property
    def loaded(self) -> bool:
        return self._handle is not None

    def load(self) -> Any:
        """Build the crypto object (slow for RSA: the service calls this in a worker thread first)."""
        if self._handle is None:
            self._handle = self._key_type.load(self.material)
        return self._handle

    @property
    def handle(self) -> Any:
        return self.load()


@dataclass(frozen=True)
class Key:
    name: str
    key_type: KeyType
    latest_version: int
    settings: KeySettings
    generation: int
    versions: Mapping[int, KeyVersion] = field(repr=False)
    # The key's row id (usage counters are kept by it); 0 for a key not read from storage.
    key_id: int = 0

    # Read-side shortcuts to the settings the version rules use.
    @property
    def min_decryption_version(self) -> int:
        return self.settings.min_decryption_version

    @property
    def min_encryption_version(self) -> int:
        return self.settings.min_encryption_version

    # -- version rules (Vault's) -------------------------------------------------------------------

    def version_for_encryption(self, requested: int, operation: str = "encryption") -> KeyVersion:
        """0 means latest; otherwise min_encryption_version <= requested <= latest."""
        if requested < 0:
            raise InvalidRequest(f"requested version for {operation} is negative")
        if requested > self.latest_version:
            raise InvalidRequest(f"requested version for {operation} is higher than the latest key version")
        if requested == 0:
            requested = self.latest_version
        if self.min_encryption_version and requested < self.min_encryption_version:
            # Vault says "encryption key version" for signing too.
            raise InvalidRequest(f"requested version for {operation} is less than the minimum encryption key version")
        return self._version(requested)

    def version_for_decryption(self, version: int, what: str) -> KeyVersion:
        if version > self.latest_version:
            raise InvalidRequest(f"invalid {what}: version is too new")
        if version < self.min_decryption_version:
            raise InvalidRequest("ciphertext or signature version is disallowed by policy (too old)")
        return self._version(version)

    def _version(self, version: int) -> KeyVersion:
        try:
            return self.versions[version]
        except KeyError:
            raise InvalidRequest("no such key version") from None

    # -- operations ----------------------------------------------------------------------------------
    #
    # Every operation applies Vault's checks in Vault's order, so the first error a request meets is
    # Vault's. Derivation is the key's business: a context reaches the type only when the key is derived
    # (Vault ignores one sent to a key that is not), and a derived key without one is refused.

    def encrypt(self, plaintext: bytes, options: EncryptOptions, key_version: int = 0) -> tuple[str, int]:
        """``vault-kms:v<N>:<b64 body>`` and N. Derived keys need ``options.context``; convergent keys then
        give equal ciphertexts for equal (plaintext, context, version)."""
        handle, derivation, version = self._encryption(options, key_version)
        return format_versioned(version, self.key_type.encrypt(handle, plaintext, derivation)), version

    def encrypt_many(
        self, plaintexts: list[bytes], options: EncryptOptions, key_version: int = 0
    ) -> tuple[list[str], int]:
        """``encrypt`` of each plaintext with the same options and version, at once (``KeyType.encrypt_many``):
        their ciphertexts and the version. Raises what ``encrypt`` raises, before it encrypts any."""
        handle, derivation, version = self._encryption(options, key_version)
        prefix = versioned_prefix(version)
        bodies = self.key_type.encrypt_many(handle, plaintexts, derivation)
        return [prefix + b64encode(body) for body in bodies], version  # as format_versioned

    def _encryption(self, options: EncryptOptions, key_version: int) -> tuple[Any, EncryptOptions, int]:
        """Vault's checks before encrypting, in its order: the version's handle, the options as the key
        reads them (``_derivation``) and the version."""
        self._check_encrypt_options(options)
        if not self.key_type.supports_encryption:
            raise InvalidRequest(f"message encryption not supported for key type {self.key_type.name}")
        kv = self.version_for_encryption(key_version)
        return kv.handle, self._derivation(options), kv.version

    def decrypt(self, ciphertext: str, options: EncryptOptions) -> bytes:
        self._check_encrypt_options(options)
        if not self.key_type.supports_encryption:
            raise InvalidRequest(f"message decryption not supported for key type {self.key_type.name}")
        parsed = parse_versioned(ciphertext, "ciphertext")
        kv = self.version_for_decryption(parsed.version, "ciphertext")
        try:
            body = b64decode_strict(parsed.payload)
        except ValueError:
            raise InvalidRequest("invalid ciphertext: could not decode base64") from None
        return self.key_type.decrypt(kv.handle, body, self._derivation(options))

    def decrypt_many(
        self, ciphertexts: list[str], options: EncryptOptions, parsed: Mapping[str, tuple[int, str]] | None = None
    ) -> list[bytes | None]:
        """``decrypt`` of each ciphertext with the same options, at once (``KeyType.decrypt_many``, per
        version): each plaintext, or None where ``decrypt`` refuses it (the caller asks ``decrypt`` for that
        one's error, so the refusal is worded, and ordered among Vault's checks, as a single request's).
        ``parsed``: ciphertexts the caller has parsed already (``versioned_pair``), not parsed again."""
        opened: list[bytes | None] = [None] * len(ciphertexts)
        try:
            self._check_encrypt_options(options)
            if not self.key_type.supports_encryption:
                return opened
            derivation = self._derivation(options)
        except UserError:
            return opened
        bodies: dict[int, list[tuple[int, bytes]]] = {}  # version → (position, body) of each
        known = parsed or {}
        for position, ciphertext in enumerate(ciphertexts):
            pair = known.get(ciphertext) or well_formed(ciphertext)
            if pair is None:
                continue
            try:
                bodies.setdefault(pair[0], []).append((position, b64decode_strict(pair[1])))
            except ValueError:
                continue
        for version, entries in bodies.items():
            try:
                kv = self.version_for_decryption(version, "ciphertext")
            except UserError:
                continue
            plaintexts = self.key_type.decrypt_many(kv.handle, [body for _, body in entries], derivation)
            for (position, _), plaintext in zip(entries, plaintexts, strict=True):
                opened[position] = plaintext
        return opened

    def rewrap(
        self,
        ciphertext: str,
        options: EncryptOptions,
        key_version: int = 0,
        encrypt_options: EncryptOptions | None = None,
    ) -> tuple[str, int]:
        """Decrypt with ``options``, encrypt again with ``encrypt_options`` (default: the same; Vault's
        ``decrypt_padding_scheme`` / ``encrypt_padding_scheme`` differ only in ``padding_scheme``)."""
        plaintext = self.decrypt(ciphertext, options)
        return self.encrypt(plaintext, encrypt_options or options, key_version)

    def sign(self, data: bytes, options: SignOptions, key_version: int = 0) -> tuple[str, int]:
        """``vault-kms:v<N>:<signature>`` (standard base64, URL-safe unpadded for ``jws``) and N. A derived
        ed25519 key signs with the key derived from ``options.context``; its public key is
        ``derived_public_key(context, key_version)``."""
        self._check_sign_options(options, "failed to parse batch item: ")
        kv = self.version_for_encryption(key_version, "signing")
        signature = self.key_type.sign(kv.handle, data, self._signing_context(options))
        return format_versioned(kv.version, signature, urlsafe=options.marshaling == "jws"), kv.version

    def verify(self, data: bytes, signature: str, options: SignOptions) -> bool:
        """True or False for a well-formed signature; malformed ones raise Vault's errors."""
        self._check_sign_options(
            options, "failed to parse item: failed to parse batch item: ", "does not support verification"
        )
        parsed = parse_versioned(signature, "signature")
        kv = self.version_for_decryption(parsed.version, "signature")
        try:
            raw = decode_signature(parsed.payload, options.marshaling)
        except (ValueError, UnicodeEncodeError):
            raise InvalidRequest("invalid base64 signature value") from None
        return self.key_type.verify(kv.handle, data, raw, self._signing_context(options))

    def derived_public_key(self, context: bytes | None, key_version: int = 0) -> str | None:
        """The base64 raw public key a derived ed25519 key signs with for ``context`` (Vault's ``public_key``
        in a sign response), or None when the key is not derived (the response then has no such field)."""
        if not (self.settings.derived and self.key_type.supports_signing):
            return None
        kv = self.version_for_encryption(key_version, "signing")
        if not context:
            raise InvalidRequest(MISSING_CONTEXT)
        return b64encode(self.key_type.derived_public_key(kv.material, context))

    def hmac(self, data: bytes, algorithm: str = "sha2-256", key_version: int = 0) -> tuple[str, int]:
        """``vault-kms:v<N>:<b64 HMAC>`` and N, with the version's HMAC key (the key itself for the hmac
        type). Works for every key type. Vault's rules: 0 or latest; below min_encryption_version refused."""
        version, mac_key, hash_algorithm = self._hmac_with(algorithm, key_version)
        return format_versioned(version, hmac_digest(mac_key, hash_algorithm, data)), version

    def hmac_many(
        self, inputs: list[bytes], algorithm: str = "sha2-256", key_version: int = 0
    ) -> tuple[list[str], int]:
        """``hmac`` of each input with the same algorithm and version, at once: their values and the version.
        Raises what ``hmac`` raises, before it computes any."""
        version, mac_key, hash_algorithm = self._hmac_with(algorithm, key_version)
        prefix = versioned_prefix(version)
        return [prefix + b64encode(hmac_digest(mac_key, hash_algorithm, data)) for data in inputs], version

    def _hmac_with(self, algorithm: str, key_version: int) -> tuple[int, bytes, hashes.HashAlgorithm]:
        """Vault's checks before an HMAC, in its order: the version, its HMAC key and the hash."""
        if key_version in (0, self.latest_version):
            version = self.latest_version
        elif self.min_encryption_version > 0 and key_version < self.min_encryption_version:
            raise InvalidRequest("cannot generate HMAC: version is too old (disallowed by policy)")
        else:
            version = key_version
        kv = self._hmac_version(version)
        return version, self.key_type.hmac_key(kv.material), _hmac_algorithm(algorithm)

    def verify_hmac(self, data: bytes, value: str, algorithm: str = "sha2-256") -> bool:
        """Whether ``value`` (``vault-kms:v<N>:`` or ``vault:v<N>:`` + base64) is the HMAC of ``data``;
        compared in constant time. Malformed values raise Vault's errors."""
        hash_algorithm = _hmac_algorithm(algorithm)
        version, given = parse_hmac(value)
        if version > self.latest_version:
            raise InvalidRequest("invalid HMAC: version is too new")
        if self.min_decryption_version > 0 and version < self.min_decryption_version:
            raise InvalidRequest("cannot verify HMAC: version is too old (disallowed by policy)")
        kv = self._hmac_version(version)
        expected = hmac_digest(self.key_type.hmac_key(kv.material), hash_algorithm, data)
        return hmac_lib.compare_digest(expected, given)

    def cmac(self, data: bytes, key_version: int = 0, mac_length: int = CMAC_MAX_LENGTH) -> tuple[str, int]:
        """``vault-kms:v<N>:<b64 CMAC>`` (AES-CMAC, truncated to ``mac_length`` bytes) and N; aes*-cmac keys."""
        _check_mac_length(mac_length)
        if not self.key_type.supports_cmac:
            raise InvalidRequest(f"CMAC is not supported for key type {self.key_type.name}")
        kv = self.version_for_encryption(key_version)
        tag = self.key_type.cmac(kv.handle, data)[:mac_length]
        return format_versioned(kv.version, tag), kv.version

    def verify_cmac(self, data: bytes, value: str, mac_length: int | None = None) -> bool:
        """Whether ``value`` is the CMAC of ``data``, compared in constant time. The tag must be the full 16
        bytes unless ``mac_length`` names a shorter one: a caller never gets to pick how short it is checked."""
        if not self.key_type.supports_cmac:
            raise InvalidRequest(f"CMAC is not supported for key type {self.key_type.name}")
        parsed = parse_versioned(value, "CMAC")
        kv = self.version_for_decryption(parsed.version, "CMAC")
        try:
            given = b64decode_strict(parsed.payload)
        except ValueError:
            raise InvalidRequest("invalid CMAC: could not decode base64") from None
        length = CMAC_MAX_LENGTH if mac_length is None else mac_length
        _check_mac_length(length)
        expected = self.key_type.cmac(kv.handle, data)[:length]
        return len(given) == length and hmac_lib.compare_digest(expected, given)

    def _hmac_version(self, version: int) -> KeyVersion:
        """Vault's HMACKey: only live versions (min_decryption_version..latest) have one."""
        if version < 0:
            raise InvalidRequest("key version does not exist (cannot be negative)")
        if version > self.latest_version:
            raise InvalidRequest(f"key version does not exist; latest key version is {self.latest_version}")
        if version < self.min_decryption_version:
            raise InvalidRequest("no such key version")
        return self._version(version)

    def export(self, export_type: str, version: int | str | None = None) -> dict[str, str]:
        """``export/:type/:name(/:version)``'s ``keys``: {"<version>": material} (transit-api.md §2.5).
        ``version``: an int, "v<int>", "<int>", "latest", or None/"" for every live version. Private
        material needs ``exportable``; public keys and certificate chains do not."""
        if export_type not in EXPORT_TYPES:
            raise InvalidRequest("invalid export type")  # Vault appends the value; we never echo it
        if not self.settings.exportable and export_type not in (EXPORT_PUBLIC_KEY, EXPORT_CERTIFICATE_CHAIN):
            raise InvalidRequest("private key material is not exportable")
        if export_type == EXPORT_ENCRYPTION_KEY and not self.key_type.supports_encryption:
            raise InvalidRequest("encryption not supported for the key")
        if export_type == EXPORT_SIGNING_KEY and not self.key_type.supports_signing:
            raise InvalidRequest("signing not supported for the key")
        if export_type == EXPORT_CERTIFICATE_CHAIN and not self.key_type.supports_signing:
            raise InvalidRequest("certificate chain not supported for keys that do not support signing")
        return {
            str(kv.version): self.key_type.export(kv.material, export_type) for kv in self._export_versions(version)
        }

    def byok_export(
        self, destination: Key, version: int | str | None = None, hash_function: str = DEFAULT_BYOK_HASH
    ) -> dict[str, str]:
        """``byok-export/:destination/:source(/:version)``'s ``keys``: each version of this (exportable) key
        wrapped as a BYOK blob for ``destination``'s latest RSA public key."""
        if not self.settings.exportable:
            raise InvalidRequest("key is not exportable")
        versions = self._export_versions(version)
        result = {}
        for kv in versions:
            target = self.key_type.byok_target(kv.material)
            try:
                byok_hash(hash_function)
            except InvalidRequest as exc:
                raise RefusedAsServerError(exc.message) from None
            result[str(kv.version)] = wrap_byok(destination.wrapping_public_key(), target, hash_function)
        return result

    def ecdh(self, peer_public_key_pem: str, key_version: int = 0) -> bytes:
        """The ECDH shared secret of this ECDSA key's version and a peer's PEM public key (OpenBao's
        derive-key)."""
        if not self.key_type.name.startswith("ecdsa-"):
            raise InvalidRequest(f"key type {self.key_type.name} does not support ECDH key agreement")
        kv = self.version_for_encryption(key_version, "derivation")
        if kv.handle.private is None:
            raise InvalidRequest("a public-key-only version cannot take part in ECDH")
        try:
            peer = serialization.load_pem_public_key(peer_public_key_pem.encode())
        except (ValueError, UnicodeEncodeError, UnsupportedAlgorithm):
            raise InvalidRequest("peer_public_key is not a PEM public key") from None
        if not isinstance(peer, ec.EllipticCurvePublicKey) or peer.curve.name != kv.handle.private.curve.name:
            raise InvalidRequest("peer_public_key is not on the base key's curve")
        return kv.handle.private.exchange(ec.ECDH(), peer)

    def wrapping_public_key(self) -> rsa.RSAPublicKey:
        """The RSA public key BYOK blobs for this key are wrapped under (its latest version)."""
        if not self.key_type.supports_signing:
            raise RefusedAsServerError(f"message signing not supported for key type {self.key_type.name}")
        material = self._version(self.latest_version).material
        public = serialization.load_der_public_key(material.public_key) if material.public_key else None
        if not isinstance(public, rsa.RSAPublicKey):
            raise RefusedAsServerError("unsupported key type in use; must be a rsa key")
        return public

    def _export_versions(self, version: int | str | None) -> list[KeyVersion]:
        if version is None or version == "":
            # The versions that exist, never a numeric range: version numbers can be large.
            return [kv for v, kv in sorted(self.versions.items()) if v >= self.min_decryption_version]
        if version == "latest":
            number: int | None = self.latest_version
        elif isinstance(version, int) and not isinstance(version, bool):
            number = version
        else:
            text = str(version)
            number = parse_go_int(text[1:] if text.startswith("v") else text)
            if number is None:
                raise InvalidRequest("invalid key version")
        if number < self.min_decryption_version:
            raise InvalidRequest("version for export is below minimum decryption version")
        if number not in self.versions or number > self.latest_version:
            raise InvalidRequest("version does not exist or cannot be found")
        return [self.versions[number]]

    def _check_encrypt_options(self, options: EncryptOptions) -> None:
        if options.padding_scheme:
            self.key_type.check_padding_scheme(options.padding_scheme)
        self._check_associated_data(options)

    def _check_associated_data(self, options: EncryptOptions) -> None:
        if options.associated_data and not self.key_type.supports_associated_data:
            raise InvalidRequest(f"associated_data provided for non-AEAD cipher suite {self.key_type.name}")

    def _check_sign_options(self, options: SignOptions, item_prefix: str, refusal: str = "does not support signing"):
        options.check_arguments()
        if not self.key_type.supports_signing:
            raise InvalidRequest(f"key type {self.key_type.name} {refusal}")
        options.check_combination()
        try:
            self.key_type.check_sign_options(options)
        except InvalidRequest as exc:
            # Vault checks these per batch item and prefixes its message so.
            raise InvalidRequest(item_prefix + exc.message) from None

    def _derivation(self, options: EncryptOptions) -> EncryptOptions:
        settings = self.settings
        random_nonce = options.nonce_source == NonceSource.RANDOM  # then no copy is needed (most requests)
        if self.key_type.context_is_info:
            # HPKE's info, derived or not
            return options if random_nonce else replace(options, nonce_source=NonceSource.RANDOM)
        if not settings.derived:
            if random_nonce and options.context is None:
                return options
            return replace(options, context=None, nonce_source=NonceSource.RANDOM)
        if not options.context:
            raise InvalidRequest(MISSING_CONTEXT)
        nonce_source = NonceSource.CONVERGENT if settings.convergent_encryption else NonceSource.RANDOM
        return replace(options, nonce_source=nonce_source)

    def _signing_context(self, options: SignOptions) -> SignOptions:
        if not (self.settings.derived and self.key_type.supports_derivation):
            return replace(options, context=None) if options.context is not None else options
        if not options.context:
            raise InvalidRequest(MISSING_CONTEXT)
        return options

    # -- presentation --------------------------------------------------------------------------------

    @property
    def key_size(self) -> int:
        """Vault's ``key_size``: the hmac type's key length (its latest version's), else 0. Rotating an hmac
        key must pass it to ``KeyType.generate``."""
        latest = self.versions.get(self.latest_version)
        return self.key_type.key_size(latest.material) if latest else 0

    @property
    def imported(self) -> bool:
        """Vault's ``imported_key``: the latest version was imported (a rotation clears it)."""
        latest = self.versions.get(self.latest_version)
        return latest is not None and latest.material.origin == Origin.IMPORTED

    def body(self, context: bytes | None = None) -> dict[str, Any]:
        """The key as Vault's GET transit/keys/:name shows it; only live versions are listed. ``context``:
        a derived ed25519 key then shows each version's public key for that context (else "")."""
        derived = self.settings.derived and self.key_type.supports_derivation
        keys = {}
        for version, kv in sorted(self.versions.items()):
            if version < self.min_decryption_version:
                continue
            created = kv.created_at.astimezone(UTC)
            keys[str(version)] = self.key_type.key_entry(
                kv.material,
                int(created.timestamp()),
                created.isoformat().replace("+00:00", "Z"),
                derived=derived,
                context=context or None,
            )
        settings = self.settings
        body: dict[str, Any] = {
            "name": self.name,
            "type": self.key_type.name,
            "derived": settings.derived,
            "deletion_allowed": settings.deletion_allowed,
            "exportable": settings.exportable,
            "allow_plaintext_backup": settings.allow_plaintext_backup,
            "latest_version": self.latest_version,
            "min_available_version": settings.min_available_version,
            "min_decryption_version": settings.min_decryption_version,
            "min_encryption_version": settings.min_encryption_version,
            "supports_encryption": self.key_type.supports_encryption,
            "supports_decryption": self.key_type.supports_encryption,
            "supports_signing": self.key_type.supports_signing,
            "supports_derivation": self.key_type.supports_derivation,
            "auto_rotate_period": settings.auto_rotate_period,
            "imported_key": self.imported,
        }
        if self.imported:
            body["imported_key_allow_rotation"] = settings.allow_imported_key_rotation
        if self.key_size:
            body["key_size"] = self.key_size
        if self.key_type.lists_versions:
            body["keys"] = keys
        if settings.soft_deleted:
            body["soft_deleted"] = True
        # Beyond Vault, shown only when set (so a Vault-shaped key reads as Vault's does).
        if settings.retain_versions:
            body["retain_versions"] = settings.retain_versions
            body["next_rotation_retires"] = settings.retired_by_rotation(self.latest_version)
        if settings.custom_metadata:
            body["custom_metadata"] = dict(settings.custom_metadata)
        if settings.derived:
            body["kdf"] = "hkdf_sha256"
            body["convergent_encryption"] = settings.convergent_encryption
            if settings.convergent_encryption:
                body["convergent_encryption_version"] = -1
        return body


def _hmac_algorithm(name: str) -> hashes.HashAlgorithm:
    try:
        return HASH_ALGORITHMS[name]()
    except KeyError:
        # Vault prints its zero HashType with %q, whatever the name was ("none" included: Vault panics on it).
        raise InvalidRequest("unsupported algorithm '\\x00'") from None


DATAKEY_BITS = (128, 256, 512)


def new_datakey(bits: int = 256) -> bytes:
    """The plaintext of ``datakey/:type/:name``: ``bits`` random bits (128, 256 or 512). The HTTP layer
    encrypts it with ``Key.encrypt`` (and shows it base64 on ``/plaintext`` only)."""
    if isinstance(bits, bool) or bits not in DATAKEY_BITS:
        raise InvalidRequest("invalid bit length")
    return os.urandom(bits // 8)
