"""The key-type registry: one class per Vault key type, one place for generate/load/encrypt/sign/export.

Adding a key type means adding one class here and registering it; the keyring, storage and HTTP layers only
talk to the ``KeyType`` interface. Per-request choices reach a type as one options object (``EncryptOptions``,
``SignOptions``), so a new option (an RSA padding, a salt length) is a field there, not a new parameter on
every type. No I/O happens here.

Wire formats are Vault's (transit-api.md §2):

==================== ====================================================== =====================================
type                 ciphertext body / signature                            stored ``KeyMaterial.key``
==================== ====================================================== =====================================
aes128/256-gcm96     nonce(12) ‖ ciphertext ‖ tag(16), AES-GCM              raw key (16 / 32 bytes)
chacha20-poly1305    nonce(12) ‖ ciphertext ‖ tag(16)                       raw key (32)
xchacha20-poly1305   nonce(24) ‖ ciphertext ‖ tag(16) (libsodium)           raw key (32)
rsa-2048/3072/4096   RSAES-OAEP SHA-256, MGF1 SHA-256, empty label; or      PKCS#8 DER
                     RSAES-PKCS1-v1_5; signatures RSASSA-PSS or PKCS1-v1_5
ecdsa-p256/384/521   ASN.1 DER ``SEQUENCE{r, s}`` or JWS ``r ‖ s``           PKCS#8 DER
ed25519              pure Ed25519, 64 bytes                                 PKCS#8 DER
hmac                 (no encryption or signing: only ``hmac``)              raw HMAC key (32..512 bytes)
==================== ====================================================== =====================================

Every version also has its own random 32-byte HMAC key (``KeyMaterial.hmac_key``); for the ``hmac`` type the
key itself is the HMAC key (``KeyType.hmac_key``). A version imported from a public key only has an empty
``key``: it verifies and (RSA) encrypts, but never signs or decrypts.

**Derived keys** (``EncryptOptions.context`` / ``SignOptions.context`` not None): the per-request key is
HKDF-SHA256(IKM = the version's key, salt = none, info = context). The IKM is the raw key for the AEAD types
and Go's 64-byte Ed25519 private key (seed ‖ public key) for ed25519, as Vault has it; the derived Ed25519 key
is the one whose seed is the first 32 HKDF bytes. **Convergent encryption** (version 3, the only one new Vault
keys get): HKDF yields ``key_size + 32`` bytes; the AEAD key is the first part, and the nonce is
HMAC-SHA256(second part, plaintext) truncated to the nonce size. A caller never chooses a nonce.

The ``Key`` model (keyring.py) decides from the key's settings whether a context is used and whether
encryption is convergent; a type does what the options say.
"""

from __future__ import annotations

import base64
import hmac as hmac_lib
import os
import re
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

from cryptography.exceptions import InvalidSignature, InvalidTag, UnsupportedAlgorithm
from cryptography.hazmat.primitives import cmac as crypto_cmac
from cryptography.hazmat.primitives import hashes, hpke, serialization
from cryptography.hazmat.primitives import hmac as crypto_hmac
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, mldsa, mlkem, padding, rsa, x25519
from cryptography.hazmat.primitives.asymmetric.utils import (
    NoDigestInfo,
    Prehashed,
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, AESGCMSIV
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305 as _ChaCha20Poly1305Cipher
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from nacl import bindings as sodium
from nacl.exceptions import CryptoError

from kms_service.errors import InvalidRequest, RefusedAsServerError, UserError
from kms_service.material import KeyMaterial, Origin

# Vault's hash_algorithm names → cryptography hash classes (sign, verify, hmac, hash).
HASH_ALGORITHMS: dict[str, type[hashes.HashAlgorithm]] = {
    "sha1": hashes.SHA1,
    "sha2-224": hashes.SHA224,
    "sha2-256": hashes.SHA256,
    "sha2-384": hashes.SHA384,
    "sha2-512": hashes.SHA512,
    "sha3-224": hashes.SHA3_224,
    "sha3-256": hashes.SHA3_256,
    "sha3-384": hashes.SHA3_384,
    "sha3-512": hashes.SHA3_512,
}
# Signing also takes "none": the input is the value to sign, as is (RSA PKCS#1 v1.5 without DigestInfo).
HASH_NONE = "none"
SIGN_HASH_ALGORITHMS = (*HASH_ALGORITHMS, HASH_NONE)

MARSHALING_ALGORITHMS = ("asn1", "jws")
SIGNATURE_ALGORITHMS = ("pss", "pkcs1v15")  # "" means pss
PADDING_SCHEMES = ("oaep", "pkcs1v15")  # "" means oaep

EXPORT_ENCRYPTION_KEY = "encryption-key"
EXPORT_SIGNING_KEY = "signing-key"
EXPORT_HMAC_KEY = "hmac-key"
EXPORT_PUBLIC_KEY = "public-key"
EXPORT_CERTIFICATE_CHAIN = "certificate-chain"
EXPORT_TYPES = (
    EXPORT_ENCRYPTION_KEY,
    EXPORT_SIGNING_KEY,
    EXPORT_HMAC_KEY,
    EXPORT_PUBLIC_KEY,
    EXPORT_CERTIFICATE_CHAIN,
)

HMAC_MIN_KEY_SIZE = 32
HMAC_MAX_KEY_SIZE = 512
HMAC_DEFAULT_KEY_SIZE = 32

# The convergent nonce key: the HKDF bytes after the encryption key.
CONVERGENT_NONCE_KEY_SIZE = 32

MISSING_CONTEXT = (
    "missing 'context' for key derivation; the key was created using a derived key, which means additional, "
    "per-request information must be included in order to perform operations with the key"
)
NO_PRIVATE_PART_FOR_SIGNING = "requested version for signing does not contain a private part"


class DecryptionFailed(InvalidRequest):
    """Every AEAD open failure collapses to one message (Go's text for the cipher): it tells nothing about why."""

    def __init__(self, message: str = "cipher: message authentication failed") -> None:
        super().__init__(message)


class PaddingSchemeError(InvalidRequest):
    """A bad ``padding_scheme``. The message is Vault's reason; the HTTP layer prefixes it with the field, as
    Vault does (``'[0].padding_scheme' invalid: <reason>``, or ``padding_scheme argument invalid: <reason>``
    on datakey)."""


def hash_algorithm(name: str) -> hashes.HashAlgorithm:
    try:
        return HASH_ALGORITHMS[name]()
    except KeyError:
        raise InvalidRequest(f"unsupported hash algorithm; use one of {', '.join(HASH_ALGORITHMS)}") from None


def hkdf_sha256(key: bytes, context: bytes, length: int) -> bytes:
    """Vault's derivation: HKDF-SHA256, no salt (RFC 5869's zero salt, as Go's ``hkdf.New(.., nil, ..)``)."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=None, info=context).derive(key)


def hmac_digest(key: bytes, algorithm: hashes.HashAlgorithm, data: bytes) -> bytes:
    mac = crypto_hmac.HMAC(key, algorithm)
    mac.update(data)
    return mac.finalize()


_GO_INT = re.compile(r"[+-]?[0-9]+", re.ASCII)
_INT64_MAX = 2**63 - 1

# Go's rsa.PSSSaltLengthAuto and rsa.PSSSaltLengthEqualsHash, the values Vault stores.
SALT_LENGTH_AUTO = 0
SALT_LENGTH_HASH = -1


def parse_go_int(text: str) -> int | None:
    """Go's ``strconv.Atoi``: optional sign, ASCII digits, 64-bit range; None when it would fail."""
    if not _GO_INT.fullmatch(text):
        return None
    value = int(text)
    return value if -_INT64_MAX - 1 <= value <= _INT64_MAX else None


def parse_salt_length(value: str | int | None) -> int:
    """Vault's ``salt_length``: "auto" (case-insensitive) → 0, "hash" → -1, else an integer ≥ -1.

    0 is Go's PSSSaltLengthAuto: the largest salt when signing, any salt when verifying."""
    if value is None:
        return SALT_LENGTH_AUTO
    if isinstance(value, bool):
        raise InvalidRequest("salt length neither 'auto', 'hash', nor an int")
    if isinstance(value, int):
        parsed: int | None = value
    else:
        lowered = value.lower()
        if lowered == "auto":
            return SALT_LENGTH_AUTO
        if lowered == "hash":
            return SALT_LENGTH_HASH
        parsed = parse_go_int(lowered)
        if parsed is None:
            # Vault appends the value; we never echo a rejected value (CVE-2025-4166).
            raise InvalidRequest("salt length neither 'auto', 'hash', nor an int")
    if parsed < SALT_LENGTH_HASH:
        raise InvalidRequest(f"salt length is invalid: {parsed}")
    return parsed


class NonceSource:
    """How an AEAD type gets its nonce. Never from the caller (CVE-2023-4680)."""

    RANDOM = "random"
    # Convergent encryption (derived keys): the nonce is an HMAC of the plaintext, so equal inputs
    # give equal ciphertexts. Only the domain sets this, from the key's settings.
    CONVERGENT = "convergent"


@dataclass(frozen=True)
class EncryptOptions:
    """Per-request encryption choices (encrypt, decrypt, rewrap, datakey).

    ``context`` and ``nonce_source`` are set by ``Key`` from the key's settings (a context sent to a key that
    is not derived is ignored, as in Vault); callers of ``Key`` only pass the request's context."""

    associated_data: bytes = b""
    # Derived keys (Vault's ``context``): the per-context key is derived from the version's key.
    context: bytes | None = None
    nonce_source: str = NonceSource.RANDOM
    # RSA only (Vault ≥ 1.19): "" or "oaep" = RSAES-OAEP SHA-256; "pkcs1v15" = RSAES-PKCS1-v1_5.
    padding_scheme: str = ""


@dataclass(frozen=True)
class SignOptions:
    """Per-request signing choices (sign, verify).

    ``check()`` runs Vault's request-level checks (the HTTP layer may call it once per request; ``Key.sign``
    and ``Key.verify`` call it too). ``context`` is the derivation context (derived ed25519 keys)."""

    hash_algorithm: str = "sha2-256"
    prehashed: bool = False
    marshaling: str = "asn1"
    # RSA only: "pss" (or "") or "pkcs1v15".
    signature_algorithm: str = "pss"
    # RSA-PSS only, as Vault takes it: "auto", "hash" or an integer (see parse_salt_length). Validated for
    # every key type, as in Vault.
    salt_length: str | int = "auto"
    context: bytes | None = None

    def check(self) -> None:
        """Vault's request checks: ``check_arguments`` then ``check_combination`` (Vault looks the key up and
        refuses a key that cannot sign between the two; ``Key.sign`` does the same)."""
        self.check_arguments()
        self.check_combination()

    def check_arguments(self) -> None:
        """Each argument on its own, in Vault's order: hash algorithm, marshaling, salt length."""
        if self.hash_algorithm not in SIGN_HASH_ALGORITHMS:
            raise InvalidRequest("invalid hash algorithm")  # Vault appends the value; we never echo it
        if self.marshaling not in MARSHALING_ALGORITHMS:
            raise InvalidRequest("invalid marshaling type")
        parse_salt_length(self.salt_length)

    def check_combination(self) -> None:
        if self.hash_algorithm == HASH_NONE and (not self.prehashed or self.signature_algorithm != "pkcs1v15"):
            raise InvalidRequest("hash_algorithm=none requires both prehashed=true and signature_algorithm=pkcs1v15")

    @property
    def salt(self) -> int:
        return parse_salt_length(self.salt_length)


class KeyType:
    """Interface every key type implements. ``handle`` is the ready-built crypto object of one version
    (``load``), built once per version, off the event loop.

    Capability flags are Vault's (transit-api.md §2.1); the key body's ``supports_*`` fields come from them.
    """

    name: ClassVar[str]
    supports_encryption: ClassVar[bool] = False  # also Vault's supports_decryption
    supports_signing: ClassVar[bool] = False
    supports_derivation: ClassVar[bool] = False
    supports_convergent_encryption: ClassVar[bool] = False
    supports_associated_data: ClassVar[bool] = False
    supports_padding_scheme: ClassVar[bool] = False
    supports_public_key_import: ClassVar[bool] = False
    # False for hmac: the key body has no ``keys`` field at all.
    lists_versions: ClassVar[bool] = True
    # True for hmac: ``generate(key_size)`` takes a size (bytes, 32..512).
    variable_key_size: ClassVar[bool] = False
    # Symmetric types: the key (or HMAC key) is raw bytes; BYOK wraps them as they are.
    symmetric: ClassVar[bool] = True
    # HPKE: the request's ``context`` is HPKE's ``info`` for every key, derived or not.
    context_is_info: ClassVar[bool] = False
    # 96-bit random nonces: encryptions per version are counted against NIST's bound (service/usage.py).
    nonce_budget: ClassVar[bool] = False
    # AES-CMAC keys (Vault Enterprise's aes*-cmac): ``cmac/:name`` and verify with ``cmac``, nothing else.
    supports_cmac: ClassVar[bool] = False
    # Operations ("sign", "verify", "decrypt") that take a quarter of a millisecond or more per call on this
    # machine kind (RSA's private key, ML-DSA, P-384/P-521): the service runs them in a worker thread, so a
    # client asking for them never holds up the others (``cryptography`` releases the interpreter meanwhile).
    slow_operations: ClassVar[frozenset[str]] = frozenset()
    # encrypt_many is faster than one by one, and refuses only what every item would be refused (the options,
    # never one plaintext): a batch's items without options of their own then go through it.
    encrypts_many: ClassVar[bool] = False

    def cmac(self, handle: Any, data: bytes) -> bytes:
        raise InvalidRequest(f"CMAC is not supported for key type {self.name}")

    def generate(self, key_size: int | None = None) -> KeyMaterial:
        """A fresh version's material (primary key, its own 32-byte HMAC key, public key), as it is sealed and
        stored. ``key_size`` (bytes) is for the hmac type only: None or 0 means its default; other types
        refuse any other value. May be slow (RSA): callers run it off the event loop, before taking any lock."""
        raise NotImplementedError

    def _no_key_size(self, key_size: int | None) -> None:
        if key_size:
            raise InvalidRequest(f"key_size is not valid for algorithm {self.name}")

    def import_key(self, raw: bytes) -> KeyMaterial:
        """Material for an imported version (origin ``imported``, a fresh HMAC key). ``raw`` is what a BYOK
        blob unwraps to: raw key bytes for symmetric and hmac types, PKCS#8 DER for asymmetric ones.
        Errors are Vault's (a plain error there, so ``RefusedAsServerError``)."""
        raise NotImplementedError

    def import_public_key(self, pem: str | bytes, derived: bool = False) -> KeyMaterial:
        """A public-key-only version (rsa, ecdsa, ed25519): it can verify and encrypt, not sign or decrypt."""
        raise RefusedAsServerError("provided type does not support public_key import")

    def public_key(self, key: bytes) -> bytes | None:
        """DER SubjectPublicKeyInfo for a stored primary key (asymmetric types), else None."""
        return None

    def load(self, material: KeyMaterial) -> Any:
        """Build the crypto object for a version (once per version, lazily, off the event loop)."""
        raise NotImplementedError

    def encrypt(self, handle: Any, plaintext: bytes, options: EncryptOptions) -> bytes:
        raise InvalidRequest(f"message encryption not supported for key type {self.name}")

    def encrypt_many(self, handle: Any, plaintexts: list[bytes], options: EncryptOptions) -> list[bytes]:
        """``encrypt`` of each plaintext with the same options (a batch's items without options of their
        own)."""
        return [self.encrypt(handle, plaintext, options) for plaintext in plaintexts]

    def decrypt(self, handle: Any, body: bytes, options: EncryptOptions) -> bytes:
        raise InvalidRequest(f"message decryption not supported for key type {self.name}")

    def decrypt_many(self, handle: Any, bodies: list[bytes], options: EncryptOptions) -> list[bytes | None]:
        """``decrypt`` of each body with the same options: its plaintext, or None where ``decrypt`` refuses
        it (the caller asks ``decrypt`` for that one's error)."""
        opened: list[bytes | None] = []
        for body in bodies:
            try:
                opened.append(self.decrypt(handle, body, options))
            except UserError:
                opened.append(None)
        return opened

    def check_padding_scheme(self, scheme: str) -> None:
        """Vault's parsePaddingSchemeArg, for a non-empty ``padding_scheme``."""
        if scheme not in PADDING_SCHEMES:
            raise PaddingSchemeError("unknown padding scheme")  # Vault appends the value; never echoed
        if not self.supports_padding_scheme:
            raise PaddingSchemeError(f"unsupported key type {self.name} for padding scheme")

    def check_sign_options(self, options: SignOptions) -> None:
        """Type-specific option rules, checked before signing or verifying (Ed25519: pure only)."""

    def sign(self, handle: Any, data: bytes, options: SignOptions) -> bytes:
        raise InvalidRequest(f"key type {self.name} does not support signing")

    def verify(self, handle: Any, data: bytes, signature: bytes, options: SignOptions) -> bool:
        raise InvalidRequest(f"key type {self.name} does not support verification")

    def derived_public_key(self, material: KeyMaterial, context: bytes) -> bytes:
        """The raw public key of the key derived for ``context`` (derived ed25519 keys)."""
        raise InvalidRequest(f"derivation not supported for key type {self.name}")

    def key_entry(
        self,
        material: KeyMaterial,
        created_at_unix: int,
        created_at_rfc3339: str,
        *,
        derived: bool = False,
        context: bytes | None = None,
    ) -> Any:
        """The value under ``keys.<version>`` in the key body (Vault's formatKeyPolicy). Reads only the
        stored material, so showing a key never builds its crypto objects. ``derived``/``context``: a
        derived ed25519 key shows the public key for ``context``, or "" without one."""
        return created_at_unix

    def hmac_key(self, material: KeyMaterial) -> bytes:
        """The key ``hmac/:name`` uses for this version: the version's HMAC key, or the key itself (hmac)."""
        return material.hmac_key

    def key_size(self, material: KeyMaterial) -> int:
        """Vault's ``key_size`` (shown in the key body when not 0): the hmac type's key length, else 0."""
        return 0

    def export(self, material: KeyMaterial, export_type: str) -> str:
        """One version's material as ``export/:type`` shows it (transit-api.md §2.5). ``Key.export`` has
        already refused what Vault refuses with a 400; what is left here is Vault's plain error."""
        if export_type == EXPORT_HMAC_KEY:
            return _b64(self.hmac_key(material))
        if export_type == EXPORT_CERTIFICATE_CHAIN:
            chain = material.extra.get("certificate_chain")
            if not chain:
                raise RefusedAsServerError("selected key version does not have a certificate chain imported")
            return chain
        raise RefusedAsServerError(f"unknown key type {self.name} for export type {export_type}")

    def byok_target(self, material: KeyMaterial) -> bytes:
        """What a BYOK blob wraps for this version: raw key bytes, or PKCS#8 DER for asymmetric types."""
        return material.key


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# -- AEAD types ---------------------------------------------------------------------------------------------


class _XChaCha20Poly1305Cipher:
    """libsodium's XChaCha20-Poly1305 (IETF) with the same interface as cryptography's AEAD classes."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        self._key = key

    def encrypt(self, nonce: bytes, data: bytes, associated_data: bytes | None) -> bytes:
        return sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(data, associated_data, nonce, self._key)

    def decrypt(self, nonce: bytes, data: bytes, associated_data: bytes | None) -> bytes:
        if len(data) < sodium.crypto_aead_xchacha20poly1305_ietf_ABYTES:
            raise InvalidTag()  # shorter than the tag (PyNaCl would raise a ValueError)
        try:
            return sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(data, associated_data, nonce, self._key)
        except CryptoError:
            raise InvalidTag() from None


@dataclass(frozen=True, slots=True)
class AeadHandle:
    """One AEAD version: its raw key (the HKDF input for derived keys) and the cipher built on it."""

    key: bytes = field(repr=False)
    cipher: Any = field(repr=False)


class _RawKey(KeyType):
    """A key of ``KEY_SIZE`` random bytes, kept and imported (BYOK) as it is."""

    KEY_SIZE: ClassVar[int]

    def generate(self, key_size: int | None = None) -> KeyMaterial:
        self._no_key_size(key_size)
        return KeyMaterial.new(os.urandom(self.KEY_SIZE))

    def import_key(self, raw: bytes) -> KeyMaterial:
        if len(raw) != self.KEY_SIZE:
            raise RefusedAsServerError(f"invalid key size {len(raw)} bytes for key type {self.name}")
        return KeyMaterial.new(bytes(raw), origin=Origin.IMPORTED)

    def _raw(self, material: KeyMaterial) -> bytes:
        if len(material.key) != self.KEY_SIZE:
            raise ValueError(f"{self.name} key material must be {self.KEY_SIZE} bytes")
        return material.key


class _Aead(_RawKey):
    encrypts_many = True
    supports_encryption = True
    supports_derivation = True
    supports_convergent_encryption = True
    supports_associated_data = True
    NONCE_SIZE: ClassVar[int]
    TAG_SIZE: ClassVar[int] = 16
    AUTH_FAILED: ClassVar[str]

    def _cipher(self, key: bytes) -> Any:
        raise NotImplementedError

    def load(self, material: KeyMaterial) -> AeadHandle:
        key = self._raw(material)
        return AeadHandle(key, self._cipher(key))

    def derive(self, key: bytes, context: bytes, convergent: bool = False) -> tuple[bytes, bytes | None]:
        """The per-context AEAD key and, for convergent encryption, the nonce key (HKDF's next 32 bytes)."""
        if not context:
            raise InvalidRequest(MISSING_CONTEXT)
        if not convergent:
            return hkdf_sha256(key, context, self.KEY_SIZE), None
        out = hkdf_sha256(key, context, self.KEY_SIZE + CONVERGENT_NONCE_KEY_SIZE)
        return out[: self.KEY_SIZE], out[self.KEY_SIZE :]

    def encrypt(self, handle: AeadHandle, plaintext: bytes, options: EncryptOptions) -> bytes:
        convergent = options.nonce_source == NonceSource.CONVERGENT
        if options.context is None:
            if convergent:
                raise InvalidRequest(MISSING_CONTEXT)  # convergence needs a derived key
            cipher = handle.cipher
            nonce = os.urandom(self.NONCE_SIZE)
        else:
            key, nonce_key = self.derive(handle.key, options.context, convergent)
            cipher = self._cipher(key)
            if nonce_key is None:
                # Random nonces: 96-bit ones are safe up to ~2^32 encryptions per key (rotate before).
                nonce = os.urandom(self.NONCE_SIZE)
            else:
                nonce = hmac_digest(nonce_key, hashes.SHA256(), plaintext)[: self.NONCE_SIZE]
        return nonce + cipher.encrypt(nonce, plaintext, options.associated_data or None)

    def encrypt_many(self, handle: AeadHandle, plaintexts: list[bytes], options: EncryptOptions) -> list[bytes]:
        if options.context is not None or options.nonce_source == NonceSource.CONVERGENT:
            return super().encrypt_many(handle, plaintexts, options)
        # Random nonces for every plaintext from one draw of the OS's generator: as random as a draw each,
        # one system call instead of one per item.
        size, cipher, associated_data = self.NONCE_SIZE, handle.cipher, options.associated_data or None
        nonces = os.urandom(size * len(plaintexts))
        bodies = []
        for start, plaintext in zip(range(0, len(nonces), size), plaintexts, strict=True):
            nonce = nonces[start : start + size]
            bodies.append(nonce + cipher.encrypt(nonce, plaintext, associated_data))
        return bodies

    def decrypt(self, handle: AeadHandle, body: bytes, options: EncryptOptions) -> bytes:
        if len(body) < self.NONCE_SIZE:
            raise InvalidRequest("invalid ciphertext length")
        if options.context is None:
            cipher = handle.cipher
        else:
            # The convergent nonce key is not needed to open: the nonce travels in the body.
            cipher = self._cipher(self.derive(handle.key, options.context)[0])
        try:
            return cipher.decrypt(body[: self.NONCE_SIZE], body[self.NONCE_SIZE :], options.associated_data or None)
        except InvalidTag:
            raise DecryptionFailed(self.AUTH_FAILED) from None

    def decrypt_many(self, handle: AeadHandle, bodies: list[bytes], options: EncryptOptions) -> list[bytes | None]:
        if options.context is not None:
            return super().decrypt_many(handle, bodies, options)
        size, cipher, associated_data = self.NONCE_SIZE, handle.cipher, options.associated_data or None
        opened: list[bytes | None] = []
        for body in bodies:
            try:
                opened.append(cipher.decrypt(body[:size], body[size:], associated_data) if len(body) >= size else None)
            except InvalidTag:
                opened.append(None)
        return opened

    def export(self, material: KeyMaterial, export_type: str) -> str:
        if export_type == EXPORT_ENCRYPTION_KEY:
            return _b64(material.key)
        return super().export(material, export_type)


class Aes128Gcm96(_Aead):
    """AES-128-GCM, 96-bit random (or convergent) nonce, as Vault's aes128-gcm96."""

    name = "aes128-gcm96"
    nonce_budget = True
    KEY_SIZE = 16
    NONCE_SIZE = 12
    AUTH_FAILED = "cipher: message authentication failed"

    def _cipher(self, key: bytes) -> AESGCM:
        return AESGCM(key)


class Aes256Gcm96(Aes128Gcm96):
    """AES-256-GCM, Vault's default key type."""

    name = "aes256-gcm96"
    KEY_SIZE = 32


class ChaCha20Poly1305(_Aead):
    """IETF ChaCha20-Poly1305 (RFC 8439); body = nonce(12) ‖ ciphertext ‖ tag(16), as Vault."""

    name = "chacha20-poly1305"
    nonce_budget = True
    KEY_SIZE = 32
    NONCE_SIZE = 12
    AUTH_FAILED = "chacha20poly1305: message authentication failed"

    def _cipher(self, key: bytes) -> _ChaCha20Poly1305Cipher:
        return _ChaCha20Poly1305Cipher(key)


class Aes256GcmSiv(_Aead):
    """AES-256-GCM-SIV (RFC 8452): nonce-misuse resistant, so a repeated random nonce leaks only whether two
    plaintexts are equal. Body = nonce(12) ‖ ciphertext ‖ tag(16), as the GCM types."""

    name = "aes256-gcm-siv"
    KEY_SIZE = 32
    NONCE_SIZE = 12
    AUTH_FAILED = "cipher: message authentication failed"

    def _cipher(self, key: bytes) -> AESGCMSIV:
        return AESGCMSIV(key)


class XChaCha20Poly1305(_Aead):
    """XChaCha20-Poly1305 through libsodium (OpenBao's type): a 24-byte random nonce, so no practical limit
    on encryptions per key version."""

    name = "xchacha20-poly1305"
    KEY_SIZE = 32
    NONCE_SIZE = 24
    AUTH_FAILED = "chacha20poly1305: message authentication failed"

    def _cipher(self, key: bytes) -> _XChaCha20Poly1305Cipher:
        return _XChaCha20Poly1305Cipher(key)


# -- AES-CMAC (NIST SP 800-38B) -------------------------------------------------------------------------------


class _AesCmac(_RawKey):
    """A dedicated AES key for CMAC only (as Vault Enterprise's aes*-cmac types): never the key of an
    encryption type, so no key serves two constructions. The full tag is 16 bytes; a request may truncate it
    to ``mac_length`` (8 to 16)."""

    supports_cmac = True

    def load(self, material: KeyMaterial) -> bytes:
        return self._raw(material)

    def cmac(self, handle: bytes, data: bytes) -> bytes:
        mac = crypto_cmac.CMAC(algorithms.AES(handle))
        mac.update(data)
        return mac.finalize()


class Aes128Cmac(_AesCmac):
    name = "aes128-cmac"
    KEY_SIZE = 16


class Aes256Cmac(_AesCmac):
    name = "aes256-cmac"
    KEY_SIZE = 32


# -- hmac -----------------------------------------------------------------------------------------------------


class Hmac(KeyType):
    """Vault's ``hmac`` key type: the key is an HMAC key of ``key_size`` bytes (32..512, default 32); it only
    serves ``hmac/:name`` and verify with ``hmac``. Its body has ``key_size`` and no ``keys``. The envelope's
    own 32-byte HMAC key is generated like for every type but unused: the key itself is the HMAC key."""

    name = "hmac"
    lists_versions = False
    variable_key_size = True

    def generate(self, key_size: int | None = None) -> KeyMaterial:
        size = key_size or HMAC_DEFAULT_KEY_SIZE
        if not HMAC_MIN_KEY_SIZE <= size <= HMAC_MAX_KEY_SIZE:
            raise InvalidRequest(f"invalid key_size {size}")
        return KeyMaterial.new(os.urandom(size))

    def import_key(self, raw: bytes) -> KeyMaterial:
        if not HMAC_MIN_KEY_SIZE <= len(raw) <= HMAC_MAX_KEY_SIZE:
            raise RefusedAsServerError(f"invalid key size {len(raw)} bytes for key type {self.name}")
        return KeyMaterial.new(bytes(raw), origin=Origin.IMPORTED)

    def load(self, material: KeyMaterial) -> bytes:
        if not HMAC_MIN_KEY_SIZE <= len(material.key) <= HMAC_MAX_KEY_SIZE:
            raise ValueError("hmac key material must be 32 to 512 bytes")
        return material.key

    def hmac_key(self, material: KeyMaterial) -> bytes:
        return material.key

    def key_size(self, material: KeyMaterial) -> int:
        return len(material.key)


# -- asymmetric types -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AsymmetricHandle:
    """One asymmetric version: the private key (None for a public-key-only import) and the public key."""

    private: Any = field(repr=False)
    public: Any
    # Ed25519 only: Go's 64-byte private key (seed ‖ public key), the HKDF input of derived keys.
    ikm: bytes | None = field(default=None, repr=False)


def _spki_der(public_key: Any) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _pkcs8_der(private_key: Any) -> bytes:
    return private_key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def public_key_pem(spki_der: bytes | None) -> str:
    """PEM of a stored DER public key, as Vault shows it (with the trailing newline)."""
    if spki_der is None:
        return ""
    key = serialization.load_der_public_key(spki_der)
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode("ascii")


# Go's %T of what x509.ParsePKCS8PrivateKey / ParsePKIXPublicKey return, for Vault's import error texts.
def _go_type_name(key: Any) -> str:
    names = (
        (rsa.RSAPrivateKey, "*rsa.PrivateKey"),
        (rsa.RSAPublicKey, "*rsa.PublicKey"),
        (ec.EllipticCurvePrivateKey, "*ecdsa.PrivateKey"),
        (ec.EllipticCurvePublicKey, "*ecdsa.PublicKey"),
        (ed25519.Ed25519PrivateKey, "ed25519.PrivateKey"),
        (ed25519.Ed25519PublicKey, "ed25519.PublicKey"),
    )
    return next((name for cls, name in names if isinstance(key, cls)), "*ecdh.PrivateKey")


class _Asymmetric(KeyType):
    supports_signing = True
    supports_public_key_import = True
    symmetric = False
    PRIVATE_CLASS: ClassVar[type]
    PUBLIC_CLASS: ClassVar[type]

    # Subclasses: _new_private(), _check(key) (raises RefusedAsServerError with Vault's text), entry_name,
    # _public_text(public) for the key body and public-key export.

    def _new_private(self) -> Any:
        raise NotImplementedError

    def _check(self, key: Any) -> None:
        if not isinstance(key, self.PRIVATE_CLASS | self.PUBLIC_CLASS):
            raise RefusedAsServerError(f"invalid key type: expected {self.name}, got {_go_type_name(key)}")

    def _public_text(self, public: Any) -> str:
        raise NotImplementedError

    def generate(self, key_size: int | None = None) -> KeyMaterial:
        self._no_key_size(key_size)
        key = self._new_private()
        return KeyMaterial.new(_pkcs8_der(key), _spki_der(key.public_key()))

    def import_key(self, raw: bytes) -> KeyMaterial:
        try:
            key = serialization.load_der_private_key(bytes(raw), password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise RefusedAsServerError("error parsing asymmetric key: not a PKCS#8 private key") from None
        self._check(key)
        return KeyMaterial.new(_pkcs8_der(key), _spki_der(key.public_key()), origin=Origin.IMPORTED)

    def import_public_key(self, pem: str | bytes, derived: bool = False) -> KeyMaterial:
        data = pem.encode("utf-8", "replace") if isinstance(pem, str) else bytes(pem)
        if b"-----BEGIN" not in data:
            raise RefusedAsServerError("error parsing public key: not in PEM format")
        try:
            key = serialization.load_pem_public_key(data)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise RefusedAsServerError("error parsing public key: not a PKIX public key") from None
        self._check(key)
        return KeyMaterial.new(b"", _spki_der(key), origin=Origin.IMPORTED)

    def _private_key(self, key: bytes) -> Any:
        # Stored material was checked when generated or imported, and the seal authenticates it: skip
        # OpenSSL's RSA key check, which is most of the time an RSA-4096 load takes.
        private = serialization.load_der_private_key(key, password=None, unsafe_skip_rsa_key_validation=True)
        if not isinstance(private, self.PRIVATE_CLASS):
            raise ValueError(f"stored material is not an {self.name} private key")
        self._check(private)
        return private

    def public_key(self, key: bytes) -> bytes:
        return _spki_der(self._private_key(key).public_key())

    def load(self, material: KeyMaterial) -> AsymmetricHandle:
        private = self._private_key(material.key) if material.has_private_key else None
        if material.public_key is not None:
            public = serialization.load_der_public_key(material.public_key)
            if not isinstance(public, self.PUBLIC_CLASS):
                raise ValueError(f"stored public key is not an {self.name} public key")
        elif private is not None:
            public = private.public_key()
        else:
            raise ValueError(f"{self.name} material has neither a private nor a public key")
        return AsymmetricHandle(private, public)

    @staticmethod
    def _signer(handle: AsymmetricHandle) -> Any:
        if handle.private is None:
            raise InvalidRequest(NO_PRIVATE_PART_FOR_SIGNING)
        return handle.private

    def key_entry(
        self,
        material: KeyMaterial,
        created_at_unix: int,
        created_at_rfc3339: str,
        *,
        derived: bool = False,
        context: bytes | None = None,
    ) -> dict[str, Any]:
        return {
            "name": self.entry_name,
            "public_key": self._entry_public_key(material, derived, context),
            "certificate_chain": material.extra.get("certificate_chain", ""),
            "creation_time": created_at_rfc3339,
        }

    entry_name: ClassVar[str]

    def _entry_public_key(self, material: KeyMaterial, derived: bool, context: bytes | None) -> str:
        if material.public_key is None:
            return ""
        return self._public_text(serialization.load_der_public_key(material.public_key))

    def byok_target(self, material: KeyMaterial) -> bytes:
        if not material.has_private_key:
            raise RefusedAsServerError("failed to wrap target key for import: the key version has no private part")
        return material.key


ED25519_SEED_SIZE = 32  # Go's private key is the seed then the public key
ED25519_SIGNATURE_SIZE = 64


class Ed25519(_Asymmetric):
    """Pure Ed25519 (RFC 8032). Stored as PKCS#8 DER; Vault shows and exports the raw keys in base64 (the
    private key as Go's 64 bytes, seed ‖ public key). Derived keys sign with the key from the derived seed."""

    name = "ed25519"
    entry_name = "ed25519"
    supports_derivation = True
    PRIVATE_CLASS = ed25519.Ed25519PrivateKey
    PUBLIC_CLASS = ed25519.Ed25519PublicKey

    def _new_private(self) -> ed25519.Ed25519PrivateKey:
        return ed25519.Ed25519PrivateKey.generate()

    def import_public_key(self, pem: str | bytes, derived: bool = False) -> KeyMaterial:
        if derived:
            raise RefusedAsServerError(
                "unable to import only public key for derived Ed25519 key: imported key should not be an "
                "Ed25519 key pair but is instead an HKDF key"
            )
        return super().import_public_key(pem, derived)

    def load(self, material: KeyMaterial) -> AsymmetricHandle:
        handle = super().load(material)
        if handle.private is None:
            return handle
        return AsymmetricHandle(handle.private, handle.public, self._go_private_key(handle.private))

    @staticmethod
    def _go_private_key(private: ed25519.Ed25519PrivateKey) -> bytes:
        return private.private_bytes_raw() + private.public_key().public_bytes_raw()

    def derive(self, ikm: bytes | None, context: bytes | None) -> ed25519.Ed25519PrivateKey:
        """The key derived for ``context``: its seed is HKDF-SHA256(seed ‖ public key, info=context)[:32]."""
        if not context:
            raise InvalidRequest(MISSING_CONTEXT)
        if ikm is None:
            raise InvalidRequest(NO_PRIVATE_PART_FOR_SIGNING)
        return ed25519.Ed25519PrivateKey.from_private_bytes(hkdf_sha256(ikm, context, 32))

    def derived_public_key(self, material: KeyMaterial, context: bytes) -> bytes:
        ikm = self._go_private_key(self._private_key(material.key)) if material.has_private_key else None
        return self.derive(ikm, context).public_key().public_bytes_raw()

    def check_sign_options(self, options: SignOptions) -> None:
        # Newest Vault CE (path_sign_verify_ce.go): Ed25519ph and Ed25519ctx are Enterprise. Only sha2-512
        # (which selects Ed25519ph there) is refused; other hash names are ignored, as before.
        if options.prehashed:
            raise InvalidRequest("only Pure Ed25519 signatures supported, prehashed must be false")
        if options.hash_algorithm == "sha2-512":
            raise InvalidRequest("only Pure Ed25519 signatures supported, hash_alogithm should not be set")  # sic

    def sign(self, handle: AsymmetricHandle, data: bytes, options: SignOptions) -> bytes:
        key = self._signer(handle)
        if options.context is not None:
            key = self.derive(handle.ikm, options.context)
        return key.sign(data)

    def verify(self, handle: AsymmetricHandle, data: bytes, signature: bytes, options: SignOptions) -> bool:
        if options.context is None and handle.ikm is not None and len(signature) == ED25519_SIGNATURE_SIZE:
            # The service's own key pair (not a derived key, not an imported public key): libsodium verifies
            # in about half of OpenSSL's time. It is the stricter (it also refuses a small-order R, which
            # Go and OpenSSL take), so what it accepts OpenSSL accepts, and what it refuses OpenSSL decides:
            # the answer is always OpenSSL's (tests/test_keytypes.py).
            try:
                sodium.crypto_sign_open(signature + data, handle.ikm[ED25519_SEED_SIZE:])
                return True
            except CryptoError:
                pass
        public = handle.public
        if options.context is not None:
            public = self.derive(handle.ikm, options.context).public_key()
        try:
            public.verify(signature, data)
        except InvalidSignature:
            return False
        return True

    def _public_text(self, public: ed25519.Ed25519PublicKey) -> str:
        return _b64(public.public_bytes_raw())

    def _entry_public_key(self, material: KeyMaterial, derived: bool, context: bytes | None) -> str:
        if derived:
            return _b64(self.derived_public_key(material, context)) if context else ""
        return super()._entry_public_key(material, derived, context)

    def export(self, material: KeyMaterial, export_type: str) -> str:
        if export_type == EXPORT_SIGNING_KEY:
            if not material.has_private_key:
                return ""
            return _b64(self._go_private_key(self._private_key(material.key)))
        if export_type == EXPORT_PUBLIC_KEY:
            return self._entry_public_key(material, False, None)
        return super().export(material, export_type)


class _Ecdsa(_Asymmetric):
    """ECDSA on a NIST curve; material is PKCS#8 DER, signatures ASN.1 DER (or JWS r ‖ s)."""

    PRIVATE_CLASS = ec.EllipticCurvePrivateKey
    PUBLIC_CLASS = ec.EllipticCurvePublicKey
    CURVE: ClassVar[type[ec.EllipticCurve]]
    COORDINATE_SIZE: ClassVar[int]

    @property
    def curve_name(self) -> str:
        return self.entry_name

    def _new_private(self) -> ec.EllipticCurvePrivateKey:
        return ec.generate_private_key(self.CURVE())

    def _check(self, key: Any) -> None:
        super()._check(key)
        if key.curve.name != self.CURVE.name:
            got = _CURVE_NAMES.get(key.curve.name, key.curve.name)
            raise RefusedAsServerError(f"invalid curve: expected {self.entry_name}, got {got}")

    @staticmethod
    def _algorithm(options: SignOptions, data: bytes) -> ec.ECDSA:
        if options.hash_algorithm == HASH_NONE:
            # As Go's ecdsa.Sign: the input is the digest, whatever its length (the leftmost bits are used).
            return ec.ECDSA(Prehashed(_Digest(len(data))))
        algorithm = hash_algorithm(options.hash_algorithm)
        if options.prehashed:
            # Stricter than Vault (which signs any input as the digest): a prehashed input must be a digest
            # of the named hash, so a forgotten hash is an error rather than a signature over raw bytes.
            if len(data) != algorithm.digest_size:
                raise InvalidRequest(
                    f"prehashed input must be a {algorithm.digest_size}-byte {options.hash_algorithm} digest"
                )
            return ec.ECDSA(Prehashed(algorithm))
        return ec.ECDSA(algorithm)

    def sign(self, handle: AsymmetricHandle, data: bytes, options: SignOptions) -> bytes:
        der = self._signer(handle).sign(data, self._algorithm(options, data))
        if options.marshaling == "jws":
            r, s = decode_dss_signature(der)
            size = self.COORDINATE_SIZE
            return r.to_bytes(size, "big") + s.to_bytes(size, "big")
        return der

    def verify(self, handle: AsymmetricHandle, data: bytes, signature: bytes, options: SignOptions) -> bool:
        algorithm = self._algorithm(options, data)
        if options.marshaling == "jws":
            # As Vault: split in half, whatever the length.
            half = len(signature) // 2
            r, s = int.from_bytes(signature[:half], "big"), int.from_bytes(signature[half:], "big")
        else:
            r, s = _parse_der_signature(signature)
        if r <= 0 or s <= 0:
            return False
        try:
            handle.public.verify(encode_dss_signature(r, s), data, algorithm)
        except InvalidSignature:
            return False
        return True

    def _public_text(self, public: ec.EllipticCurvePublicKey) -> str:
        return _pem_public(public)

    def export(self, material: KeyMaterial, export_type: str) -> str:
        if export_type == EXPORT_SIGNING_KEY:
            if not material.has_private_key:
                return ""
            private = self._private_key(material.key)
            pem = private.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,  # SEC 1 "EC PRIVATE KEY"
                serialization.NoEncryption(),
            )
            return pem.decode("ascii").strip()
        if export_type == EXPORT_PUBLIC_KEY:
            return self._entry_public_key(material, False, None).strip()
        return super().export(material, export_type)


_CURVE_NAMES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}


class _Digest(hashes.HashAlgorithm):
    """A "hash" of any size, so an input of any length signs as a prehashed ECDSA digest (as in Go)."""

    name = "prehashed-input"
    block_size = None

    def __init__(self, size: int) -> None:
        self._size = size

    @property
    def digest_size(self) -> int:
        return self._size


def _parse_der_signature(signature: bytes) -> tuple[int, int]:
    """Vault's asn1.Unmarshal into {R, S}: strict DER, and nothing after it."""
    try:
        r, s = decode_dss_signature(signature)
        if encode_dss_signature(r, s) == signature:
            return r, s
    except ValueError:
        pass
    length = _der_length(signature)
    if length is not None and length < len(signature):
        try:
            r, s = decode_dss_signature(signature[:length])
            if encode_dss_signature(r, s) == signature[:length]:
                raise InvalidRequest("supplied signature contains extra data")
        except ValueError:
            pass
    raise InvalidRequest("supplied signature is invalid")


def _der_length(data: bytes) -> int | None:
    """The total length of the DER SEQUENCE at the start of ``data``, if its header is well formed."""
    if len(data) < 2 or data[0] != 0x30:
        return None
    first = data[1]
    if first < 0x80:
        return 2 + first
    count = first & 0x7F
    if count == 0 or count > 4 or len(data) < 2 + count:
        return None
    return 2 + count + int.from_bytes(data[2 : 2 + count], "big")


def _pem_public(public: Any) -> str:
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode(
        "ascii"
    )


class EcdsaP256(_Ecdsa):
    name = "ecdsa-p256"
    entry_name = "P-256"
    CURVE = ec.SECP256R1
    COORDINATE_SIZE = 32


class EcdsaP384(_Ecdsa):
    name = "ecdsa-p384"
    entry_name = "P-384"
    slow_operations = frozenset({"sign", "verify"})  # about 0.3 and 0.7 ms
    CURVE = ec.SECP384R1
    COORDINATE_SIZE = 48


class EcdsaP521(_Ecdsa):
    name = "ecdsa-p521"
    entry_name = "P-521"
    slow_operations = frozenset({"sign", "verify"})  # about 0.35 and 0.65 ms
    CURVE = ec.SECP521R1
    COORDINATE_SIZE = 66


class _Rsa(_Asymmetric):
    """RSA: encryption RSAES-OAEP (SHA-256, MGF1-SHA-256, empty label) or RSAES-PKCS1-v1_5; signatures
    RSASSA-PSS (MGF1 with the signing hash) or RSASSA-PKCS1-v1_5. Material is PKCS#8 DER; Vault exports
    PKCS#1 ``RSA PRIVATE KEY`` and PKIX ``PUBLIC KEY`` PEM, both with the trailing newline."""

    supports_encryption = True
    supports_padding_scheme = True
    slow_operations = frozenset({"sign", "decrypt"})  # the private key: 0.35 ms (2048 bits) to 1.5 ms (4096)
    PRIVATE_CLASS = rsa.RSAPrivateKey
    PUBLIC_CLASS = rsa.RSAPublicKey
    BITS: ClassVar[int]

    def _new_private(self) -> rsa.RSAPrivateKey:
        return rsa.generate_private_key(public_exponent=65537, key_size=self.BITS)

    def _check(self, key: Any) -> None:
        super()._check(key)
        size = (key.key_size + 7) // 8
        if size != self.BITS // 8:
            raise RefusedAsServerError(f"invalid key size: expected {self.BITS // 8} bytes, got {size} bytes")

    @staticmethod
    def _encryption_padding(options: EncryptOptions) -> padding.AsymmetricPadding:
        if options.padding_scheme == "pkcs1v15":
            return padding.PKCS1v15()
        if options.padding_scheme in ("", "oaep"):
            return padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
        raise PaddingSchemeError("unknown padding scheme")

    def encrypt(self, handle: AsymmetricHandle, plaintext: bytes, options: EncryptOptions) -> bytes:
        pad = self._encryption_padding(options)
        try:
            return handle.public.encrypt(plaintext, pad)
        except ValueError:
            raise RefusedAsServerError(
                "failed to RSA encrypt the plaintext: crypto/rsa: message too long for RSA key size"
            ) from None

    def decrypt(self, handle: AsymmetricHandle, body: bytes, options: EncryptOptions) -> bytes:
        pad = self._encryption_padding(options)
        if handle.private is None:
            raise RefusedAsServerError("failed to RSA decrypt the ciphertext: the key version has no private part")
        try:
            # PKCS#1 v1.5: OpenSSL's implicit rejection answers a bad padding with random bytes, not an error.
            return handle.private.decrypt(body, pad)
        except ValueError:
            raise RefusedAsServerError("failed to RSA decrypt the ciphertext: crypto/rsa: decryption error") from None

    def _max_salt_length(self, key_bits: int, algorithm: hashes.HashAlgorithm) -> int:
        return (key_bits - 1 + 7) // 8 - 2 - algorithm.digest_size

    def _signature_padding(
        self, public: rsa.RSAPublicKey, options: SignOptions, algorithm: hashes.HashAlgorithm, signing: bool
    ) -> padding.AsymmetricPadding:
        scheme = options.signature_algorithm or "pss"
        if scheme == "pkcs1v15":
            return padding.PKCS1v15()
        if scheme != "pss":
            raise RefusedAsServerError("unsupported rsa signature algorithm")  # Vault appends the value
        salt = options.salt
        if not SALT_LENGTH_HASH <= salt <= self._max_salt_length(public.key_size, algorithm):
            raise InvalidRequest(f"requested salt length {salt} is invalid")
        if salt == SALT_LENGTH_AUTO:
            length: Any = padding.PSS.MAX_LENGTH if signing else padding.PSS.AUTO
        elif salt == SALT_LENGTH_HASH:
            length = padding.PSS.DIGEST_LENGTH
        else:
            length = salt
        return padding.PSS(mgf=padding.MGF1(algorithm), salt_length=length)

    def sign(self, handle: AsymmetricHandle, data: bytes, options: SignOptions) -> bytes:
        private = self._signer(handle)
        if options.hash_algorithm == HASH_NONE:
            # check() made sure this is prehashed PKCS#1 v1.5: the input is signed without a DigestInfo.
            return private.sign(data, padding.PKCS1v15(), NoDigestInfo())
        algorithm = hash_algorithm(options.hash_algorithm)
        pad = self._signature_padding(handle.public, options, algorithm, signing=True)
        if options.prehashed:
            if len(data) != algorithm.digest_size:
                raise InvalidRequest(
                    "crypto/rsa: input must be hashed message"
                    if isinstance(pad, padding.PKCS1v15)
                    else "crypto/rsa: input must be hashed with given hash"
                )
            return private.sign(data, pad, Prehashed(algorithm))
        return private.sign(data, pad, algorithm)

    def verify(self, handle: AsymmetricHandle, data: bytes, signature: bytes, options: SignOptions) -> bool:
        public: rsa.RSAPublicKey = handle.public
        if options.hash_algorithm == HASH_NONE:
            try:
                recovered = public.recover_data_from_signature(signature, padding.PKCS1v15(), NoDigestInfo())
            except (InvalidSignature, ValueError):
                return False
            return hmac_lib.compare_digest(recovered, data)
        algorithm = hash_algorithm(options.hash_algorithm)
        pad = self._signature_padding(public, options, algorithm, signing=False)
        chosen: Any = algorithm
        if options.prehashed:
            if len(data) != algorithm.digest_size:
                return False
            chosen = Prehashed(algorithm)
        try:
            public.verify(signature, data, pad, chosen)
        except (InvalidSignature, ValueError):
            return False
        return True

    def _public_text(self, public: rsa.RSAPublicKey) -> str:
        return _pem_public(public)

    def export(self, material: KeyMaterial, export_type: str) -> str:
        if export_type in (EXPORT_ENCRYPTION_KEY, EXPORT_SIGNING_KEY):
            if not material.has_private_key:
                return ""
            pem = self._private_key(material.key).private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,  # PKCS#1 "RSA PRIVATE KEY"
                serialization.NoEncryption(),
            )
            return pem.decode("ascii")
        if export_type == EXPORT_PUBLIC_KEY:
            return self._entry_public_key(material, False, None)
        return super().export(material, export_type)


class Rsa2048(_Rsa):
    name = "rsa-2048"
    entry_name = "rsa-2048"
    BITS = 2048


class Rsa3072(_Rsa):
    name = "rsa-3072"
    entry_name = "rsa-3072"
    BITS = 3072


class Rsa4096(_Rsa):
    name = "rsa-4096"
    entry_name = "rsa-4096"
    BITS = 4096


# -- post-quantum signatures (FIPS 204) ----------------------------------------------------------------------


class _MlDsa(_Asymmetric):
    """Pure ML-DSA (FIPS 204): the message is signed as it is, with an empty context string. Material is
    PKCS#8 DER (the 32-byte seed form); the public key is PKIX PEM (RFC 9881), on read and export."""

    slow_operations = frozenset({"sign", "verify"})  # 0.65 to 1.2 ms and 0.1 to 0.3 ms

    supports_public_key_import = True

    def _new_private(self) -> Any:
        return self.PRIVATE_CLASS.generate()

    def check_sign_options(self, options: SignOptions) -> None:
        if options.prehashed:
            raise InvalidRequest(f"prehashed input is not supported for {self.name}: ML-DSA signs the message itself")

    def sign(self, handle: AsymmetricHandle, data: bytes, options: SignOptions) -> bytes:
        return self._signer(handle).sign(data)

    def verify(self, handle: AsymmetricHandle, data: bytes, signature: bytes, options: SignOptions) -> bool:
        try:
            handle.public.verify(signature, data)
        except InvalidSignature:
            return False
        return True

    def _public_text(self, public: Any) -> str:
        return _pem_public(public)

    def export(self, material: KeyMaterial, export_type: str) -> str:
        if export_type == EXPORT_SIGNING_KEY:
            if not material.has_private_key:
                return ""
            pem = self._private_key(material.key).private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            return pem.decode("ascii")
        if export_type == EXPORT_PUBLIC_KEY:
            return self._entry_public_key(material, False, None)
        return super().export(material, export_type)


class MlDsa44(_MlDsa):
    name = entry_name = "ml-dsa-44"
    PRIVATE_CLASS = mldsa.MLDSA44PrivateKey
    PUBLIC_CLASS = mldsa.MLDSA44PublicKey


class MlDsa65(_MlDsa):
    name = entry_name = "ml-dsa-65"
    PRIVATE_CLASS = mldsa.MLDSA65PrivateKey
    PUBLIC_CLASS = mldsa.MLDSA65PublicKey


class MlDsa87(_MlDsa):
    name = entry_name = "ml-dsa-87"
    PRIVATE_CLASS = mldsa.MLDSA87PrivateKey
    PUBLIC_CLASS = mldsa.MLDSA87PublicKey


# -- hybrid signatures: ML-DSA-65 with a classical signature ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class HybridHandle:
    pq: AsymmetricHandle = field(repr=False)
    classical: AsymmetricHandle = field(repr=False)


def _pack(first: bytes, second: bytes) -> bytes:
    """Two byte strings as one: a 4-byte big-endian length of the first, the first, the second."""
    return len(first).to_bytes(4, "big") + first + second


def _unpack(packed: bytes) -> tuple[bytes, bytes]:
    if len(packed) < 4:
        raise ValueError("too short")
    size = int.from_bytes(packed[:4], "big")
    if size > len(packed) - 4:
        raise ValueError("bad length")
    return packed[4 : 4 + size], packed[4 + size :]


class _HybridSigning(KeyType):
    """Two signatures over the same message, ML-DSA-65 (FIPS 204) and a classical one; a signature is valid
    only if both verify, so it stands while either algorithm does (as Vault Enterprise's hybrid keys). Stored
    key: ``_pack(ML-DSA PKCS#8, classical PKCS#8)``. Signature: ``_pack(ML-DSA signature, classical
    signature)`` (the classical one as its type makes it: ASN.1 ECDSA or raw Ed25519). The public key shows
    as the two PKIX PEM blocks, ML-DSA's first."""

    supports_signing = True
    symmetric = False
    slow_operations = frozenset({"sign", "verify"})  # ML-DSA-65's and the classical one's
    PQ: ClassVar[_Asymmetric] = MlDsa65()
    CLASSICAL: ClassVar[_Asymmetric]

    def generate(self, key_size: int | None = None) -> KeyMaterial:
        self._no_key_size(key_size)
        return KeyMaterial.new(_pack(self.PQ.generate().key, self.CLASSICAL.generate().key))

    def import_key(self, raw: bytes) -> KeyMaterial:
        try:
            pq, classical = _unpack(bytes(raw))
        except ValueError:
            raise RefusedAsServerError(f"invalid {self.name} key: not two packed PKCS#8 keys") from None
        self.PQ.import_key(pq)  # each part is checked as its own type (Vault's error texts)
        self.CLASSICAL.import_key(classical)
        return KeyMaterial.new(bytes(raw), origin=Origin.IMPORTED)

    def _parts(self, material: KeyMaterial) -> tuple[KeyMaterial, KeyMaterial]:
        pq, classical = _unpack(material.key)
        return (
            KeyMaterial(pq, material.hmac_key, self.PQ.public_key(pq), material.origin),
            KeyMaterial(classical, material.hmac_key, self.CLASSICAL.public_key(classical), material.origin),
        )

    def load(self, material: KeyMaterial) -> HybridHandle:
        pq, classical = self._parts(material)
        return HybridHandle(self.PQ.load(pq), self.CLASSICAL.load(classical))

    def check_sign_options(self, options: SignOptions) -> None:
        self.PQ.check_sign_options(options)
        self.CLASSICAL.check_sign_options(options)

    def sign(self, handle: HybridHandle, data: bytes, options: SignOptions) -> bytes:
        classical_options = replace(options, marshaling="asn1")  # the packed signature is binary anyway
        return _pack(
            self.PQ.sign(handle.pq, data, options), self.CLASSICAL.sign(handle.classical, data, classical_options)
        )

    def verify(self, handle: HybridHandle, data: bytes, signature: bytes, options: SignOptions) -> bool:
        try:
            pq, classical = _unpack(signature)
        except ValueError:
            return False
        classical_options = replace(options, marshaling="asn1")
        try:
            classical_ok = self.CLASSICAL.verify(handle.classical, data, classical, classical_options)
        except InvalidRequest:
            return False  # a malformed classical part is simply not a valid signature here
        return self.PQ.verify(handle.pq, data, pq, options) and classical_ok

    def public_text(self, material: KeyMaterial) -> str:
        pq, classical = self._parts(material)
        return public_key_pem(pq.public_key) + public_key_pem(classical.public_key)

    def key_entry(
        self,
        material: KeyMaterial,
        created_at_unix: int,
        created_at_rfc3339: str,
        *,
        derived: bool = False,
        context: bytes | None = None,
    ) -> dict[str, Any]:
        return {
            "name": self.name,
            "public_key": self.public_text(material),
            "certificate_chain": "",
            "creation_time": created_at_rfc3339,
        }

    def export(self, material: KeyMaterial, export_type: str) -> str:
        if export_type == EXPORT_PUBLIC_KEY:
            return self.public_text(material)
        if export_type == EXPORT_SIGNING_KEY:
            pq, classical = self._parts(material)
            return self.PQ.export(pq, export_type) + self.CLASSICAL.export(classical, export_type).strip() + "\n"
        return super().export(material, export_type)


class HybridMlDsa65EcdsaP256(_HybridSigning):
    name = "hybrid-ml-dsa-65-ecdsa-p256"
    CLASSICAL = EcdsaP256()


class HybridMlDsa65Ed25519(_HybridSigning):
    name = "hybrid-ml-dsa-65-ed25519"
    CLASSICAL = Ed25519()


# -- public-key encryption with HPKE (RFC 9180) ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HpkeHandle:
    private: Any = field(repr=False)
    public: Any


class _Hpke(KeyType):
    """HPKE base mode with HKDF-SHA256 and ChaCha20-Poly1305, single-shot: the body is ``enc ‖ ct`` as RFC
    9180's Seal gives it, and the request's ``context`` is HPKE's ``info``. Anyone holding the public key
    encrypts offline with any HPKE library; only the service opens. ``associated_data`` is refused: the
    single-shot API of ``cryptography`` takes no aad, and no construction is made up here to bind one."""

    supports_encryption = True
    symmetric = False
    context_is_info = True
    KEM: ClassVar[Any]
    PRIVATE_SIZE: ClassVar[int]

    @property
    def suite(self) -> hpke.Suite:
        return hpke.Suite(self.KEM, hpke.KDF.HKDF_SHA256, hpke.AEAD.CHACHA20_POLY1305)

    def generate(self, key_size: int | None = None) -> KeyMaterial:
        self._no_key_size(key_size)
        return self._material(os.urandom(self.PRIVATE_SIZE), Origin.GENERATED)

    def import_key(self, raw: bytes) -> KeyMaterial:
        if len(raw) != self.PRIVATE_SIZE:
            raise RefusedAsServerError(f"invalid key size {len(raw)} bytes for key type {self.name}")
        return self._material(bytes(raw), Origin.IMPORTED)

    def _material(self, raw: bytes, origin: str) -> KeyMaterial:
        return KeyMaterial.new(raw, self.public_key(raw), origin=origin)

    def load(self, material: KeyMaterial) -> HpkeHandle:
        if len(material.key) != self.PRIVATE_SIZE:
            raise ValueError(f"{self.name} key material must be {self.PRIVATE_SIZE} bytes")
        private = self._private(material.key)
        return HpkeHandle(private, private.public_key())

    def _private(self, raw: bytes) -> Any:
        raise NotImplementedError

    def public_text(self, raw: bytes) -> str:
        """The public key as shown on read and export."""
        raise NotImplementedError

    def encrypt(self, handle: HpkeHandle, plaintext: bytes, options: EncryptOptions) -> bytes:
        return self.suite.encrypt(plaintext, handle.public, info=options.context or b"")

    def decrypt(self, handle: HpkeHandle, body: bytes, options: EncryptOptions) -> bytes:
        try:
            return self.suite.decrypt(body, handle.private, info=options.context or b"")
        except (InvalidTag, ValueError):
            raise DecryptionFailed("hpke: message authentication failed") from None

    def key_entry(
        self,
        material: KeyMaterial,
        created_at_unix: int,
        created_at_rfc3339: str,
        *,
        derived: bool = False,
        context: bytes | None = None,
    ) -> dict[str, Any]:
        return {
            "name": self.name,
            "public_key": self.public_text(material.key),
            "certificate_chain": "",
            "creation_time": created_at_rfc3339,
        }

    def export(self, material: KeyMaterial, export_type: str) -> str:
        if export_type == EXPORT_ENCRYPTION_KEY:
            return _b64(material.key)
        if export_type == EXPORT_PUBLIC_KEY:
            return self.public_text(material.key)
        return super().export(material, export_type)


class HpkeX25519(_Hpke):
    """DHKEM(X25519, HKDF-SHA256). The private key is X25519's raw 32 bytes; the public key is PKIX PEM."""

    name = "hpke-x25519"
    KEM = hpke.KEM.X25519
    PRIVATE_SIZE = 32

    def _private(self, raw: bytes) -> x25519.X25519PrivateKey:
        return x25519.X25519PrivateKey.from_private_bytes(raw)

    def public_key(self, key: bytes) -> bytes:
        return _spki_der(self._private(key).public_key())

    def public_text(self, raw: bytes) -> str:
        return _pem_public(self._private(raw).public_key())


class HpkeMlKem768X25519(_Hpke):
    """The post-quantum hybrid KEM MLKEM768-X25519 (X-Wing's combination, as ``cryptography`` implements it).
    The private key is ML-KEM-768's 64-byte seed ‖ X25519's 32 bytes. No PKIX encoding exists for the pair,
    so the public key is shown as base64 of ML-KEM-768's encapsulation key (1184 bytes) ‖ X25519's (32)."""

    name = "hpke-mlkem768-x25519"
    KEM = hpke.KEM.MLKEM768_X25519
    PRIVATE_SIZE = 64 + 32

    def _private(self, raw: bytes) -> hpke.MLKEM768X25519PrivateKey:
        return hpke.MLKEM768X25519PrivateKey(
            mlkem.MLKEM768PrivateKey.from_seed_bytes(raw[:64]), x25519.X25519PrivateKey.from_private_bytes(raw[64:])
        )

    def public_text(self, raw: bytes) -> str:
        kem = mlkem.MLKEM768PrivateKey.from_seed_bytes(raw[:64]).public_key().public_bytes_raw()
        dh = x25519.X25519PrivateKey.from_private_bytes(raw[64:]).public_key().public_bytes_raw()
        return _b64(kem + dh)


def hpke_mlkem768_x25519_public_key(text: str) -> hpke.MLKEM768X25519PublicKey:
    """A client's view of ``HpkeMlKem768X25519.public_text``: the HPKE public key to seal to."""
    raw = base64.b64decode(text)
    return hpke.MLKEM768X25519PublicKey(
        mlkem.MLKEM768PublicKey.from_public_bytes(raw[:1184]), x25519.X25519PublicKey.from_public_bytes(raw[1184:])
    )


KEY_TYPES: dict[str, KeyType] = {
    kt.name: kt
    for kt in (
        Aes128Gcm96(),
        Aes256Gcm96(),
        Aes256GcmSiv(),
        ChaCha20Poly1305(),
        XChaCha20Poly1305(),
        Ed25519(),
        EcdsaP256(),
        EcdsaP384(),
        EcdsaP521(),
        Rsa2048(),
        Rsa3072(),
        Rsa4096(),
        MlDsa44(),
        MlDsa65(),
        MlDsa87(),
        HybridMlDsa65EcdsaP256(),
        HybridMlDsa65Ed25519(),
        HpkeX25519(),
        HpkeMlKem768X25519(),
        Aes128Cmac(),
        Aes256Cmac(),
        Hmac(),
    )
}

# Other spellings of a type at creation: OpenBao 2.7's ``mldsa-65``; Vault Enterprise's ``ml-dsa`` takes
# ``parameter_set`` (see ``canonical_type``).
TYPE_ALIASES = {"mldsa-44": "ml-dsa-44", "mldsa-65": "ml-dsa-65", "mldsa-87": "ml-dsa-87"}
ML_DSA_PARAMETER_SETS = ("44", "65", "87")


def canonical_type(name: str, parameter_set: str | None = None) -> str:
    """The registry's name for a type as a client spells it; ``ml-dsa`` needs ``parameter_set``."""
    if name == "ml-dsa":
        if parameter_set not in ML_DSA_PARAMETER_SETS:
            raise InvalidRequest("parameter_set must be one of 44, 65, 87 for key type ml-dsa")
        return f"ml-dsa-{parameter_set}"
    return TYPE_ALIASES.get(name, name)


DEFAULT_KEY_TYPE = "aes256-gcm96"


def key_type(name: str) -> KeyType:
    try:
        return KEY_TYPES[name]
    except KeyError:
        raise InvalidRequest(f"unknown key type; supported: {', '.join(sorted(KEY_TYPES))}") from None
