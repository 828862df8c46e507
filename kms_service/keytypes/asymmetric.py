"""What the asymmetric types share: PKCS#8 DER material, PKIX public keys, import of private and public
keys with Vault's error texts, and the key body's per-version entry."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from kms_service.errors import InvalidRequest, RefusedAsServerError
from kms_service.keytypes.base import NO_PRIVATE_PART_FOR_SIGNING, KeyType
from kms_service.material import KeyMaterial, Origin


@dataclass(frozen=True, slots=True)
class AsymmetricHandle:
    """One asymmetric version: the private key (None for a public-key-only import) and the public key."""

    private: Any = field(repr=False)
    public: Any
    # Ed25519 only: Go's 64-byte private key (seed ‖ public key), the HKDF input of derived keys.
    ikm: bytes | None = field(default=None, repr=False)


def spki_der(public_key: Any) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def pkcs8_der(private_key: Any) -> bytes:
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


class AsymmetricKeyType(KeyType):
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
        return KeyMaterial.new(pkcs8_der(key), spki_der(key.public_key()))

    def import_key(self, raw: bytes) -> KeyMaterial:
        try:
            key = serialization.load_der_private_key(bytes(raw), password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise RefusedAsServerError("error parsing asymmetric key: not a PKCS#8 private key") from None
        self._check(key)
        return KeyMaterial.new(pkcs8_der(key), spki_der(key.public_key()), origin=Origin.IMPORTED)

    def import_public_key(self, pem: str | bytes, derived: bool = False) -> KeyMaterial:
        data = pem.encode("utf-8", "replace") if isinstance(pem, str) else bytes(pem)
        if b"-----BEGIN" not in data:
            raise RefusedAsServerError("error parsing public key: not in PEM format")
        try:
            key = serialization.load_pem_public_key(data)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise RefusedAsServerError("error parsing public key: not a PKIX public key") from None
        self._check(key)
        return KeyMaterial.new(b"", spki_der(key), origin=Origin.IMPORTED)

    def _private_key(self, key: bytes) -> Any:
        # Stored material was checked when generated or imported, and the seal authenticates it: skip
        # OpenSSL's RSA key check, which is most of the time an RSA-4096 load takes.
        private = serialization.load_der_private_key(key, password=None, unsafe_skip_rsa_key_validation=True)
        if not isinstance(private, self.PRIVATE_CLASS):
            raise ValueError(f"stored material is not an {self.name} private key")
        self._check(private)
        return private

    def public_key(self, key: bytes) -> bytes:
        return spki_der(self._private_key(key).public_key())

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


def pem_public(public: Any) -> str:
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode(
        "ascii"
    )
