"""Ed25519 (pure, RFC 8032), derived keys included."""

from __future__ import annotations

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519
from nacl import bindings as sodium
from nacl.exceptions import CryptoError

from kms_service.errors import InvalidRequest, RefusedAsServerError
from kms_service.keytypes.asymmetric import (
    ED25519_SEED_SIZE,
    ED25519_SIGNATURE_SIZE,
    AsymmetricHandle,
    AsymmetricKeyType,
)
from kms_service.keytypes.base import (
    EXPORT_PUBLIC_KEY,
    EXPORT_SIGNING_KEY,
    MISSING_CONTEXT,
    NO_PRIVATE_PART_FOR_SIGNING,
    SignOptions,
    b64_text,
    hkdf_sha256,
)
from kms_service.material import KeyMaterial


class Ed25519(AsymmetricKeyType):
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
        return b64_text(public.public_bytes_raw())

    def _entry_public_key(self, material: KeyMaterial, derived: bool, context: bytes | None) -> str:
        if derived:
            return b64_text(self.derived_public_key(material, context)) if context else ""
        return super()._entry_public_key(material, derived, context)

    def export(self, material: KeyMaterial, export_type: str) -> str:
        if export_type == EXPORT_SIGNING_KEY:
            if not material.has_private_key:
                return ""
            return b64_text(self._go_private_key(self._private_key(material.key)))
        if export_type == EXPORT_PUBLIC_KEY:
            return self._entry_public_key(material, False, None)
        return super().export(material, export_type)
