"""Post-quantum signatures: pure ML-DSA-44/65/87 (FIPS 204)."""

from __future__ import annotations

from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import mldsa

from kms_service.errors import InvalidRequest
from kms_service.keytypes.asymmetric import AsymmetricHandle, AsymmetricKeyType, pem_public
from kms_service.keytypes.base import EXPORT_PUBLIC_KEY, EXPORT_SIGNING_KEY, SignOptions
from kms_service.material import KeyMaterial


class _MlDsa(AsymmetricKeyType):
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
        return pem_public(public)

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
