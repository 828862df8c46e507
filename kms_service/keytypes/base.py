"""What every key type shares: the ``KeyType`` interface, the per-request options (``EncryptOptions``,
``SignOptions``), Vault's hash, marshaling, padding and export names, and the derivation helpers.

Per-request choices reach a type as one options object, so a new option (an RSA padding, a salt length) is a
field there, not a new parameter on every type. No I/O happens here.

**Derived keys** (``EncryptOptions.context`` / ``SignOptions.context`` not None): the per-request key is
HKDF-SHA256(IKM = the version's key, salt = none, info = context). The IKM is the raw key for the AEAD types
and Go's 64-byte Ed25519 private key (seed ‖ public key) for ed25519, as Vault has it; the derived Ed25519 key
is the one whose seed is the first 32 HKDF bytes. **Convergent encryption** (version 3, the only one new Vault
keys get): HKDF yields ``key_size + 32`` bytes; the AEAD key is the first part, and the nonce is
HMAC-SHA256(second part, plaintext) truncated to the nonce size. A caller never chooses a nonce.

The ``Key`` model (``kms_service.keyring``) decides from the key's settings whether a context is used and
whether encryption is convergent; a type does what the options say.
"""

from __future__ import annotations

import base64
import os
import re
from dataclasses import dataclass
from typing import Any, ClassVar

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

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

    def weakness(self, material: KeyMaterial) -> str | None:
        """Why material from outside (an import, a backup) is too weak to take, if it is: a key (or HMAC key)
        of one byte repeated, all zeros included, protects nothing. Vault takes such keys; this service does
        not. Never names a secret byte."""
        for what, data in (("key", material.key), ("HMAC key", material.hmac_key)):
            if len(data) > 1 and data.count(data[:1]) == len(data):
                return f"its {what} is one byte repeated"
        return None

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
            return b64_text(self.hmac_key(material))
        if export_type == EXPORT_CERTIFICATE_CHAIN:
            chain = material.extra.get("certificate_chain")
            if not chain:
                raise RefusedAsServerError("selected key version does not have a certificate chain imported")
            return chain
        raise RefusedAsServerError(f"unknown key type {self.name} for export type {export_type}")

    def byok_target(self, material: KeyMaterial) -> bytes:
        """What a BYOK blob wraps for this version: raw key bytes, or PKCS#8 DER for asymmetric types."""
        return material.key


def b64_text(data: bytes) -> str:
    """Standard base64 as text, as exports show material."""
    return base64.b64encode(data).decode("ascii")


class RawKeyType(KeyType):
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
