"""RSA-2048/3072/4096: OAEP or PKCS#1 v1.5 encryption, PSS or PKCS#1 v1.5 signatures."""

from __future__ import annotations

import hmac as hmac_lib
from typing import Any, ClassVar

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import NoDigestInfo, Prehashed

from kms_service.errors import InvalidRequest, RefusedAsServerError
from kms_service.keytypes.asymmetric import AsymmetricHandle, AsymmetricKeyType, pem_public
from kms_service.keytypes.base import (
    EXPORT_ENCRYPTION_KEY,
    EXPORT_PUBLIC_KEY,
    EXPORT_SIGNING_KEY,
    HASH_NONE,
    SALT_LENGTH_AUTO,
    SALT_LENGTH_HASH,
    EncryptOptions,
    PaddingSchemeError,
    SignOptions,
    hash_algorithm,
)
from kms_service.material import KeyMaterial

# The least an imported RSA key may have (NIST SP 800-56B and SP 800-131A); generated keys have exactly these.
MIN_PUBLIC_EXPONENT = 65537
MIN_RSA_BITS = 2048


class _Rsa(AsymmetricKeyType):
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

    def weakness(self, material: KeyMaterial) -> str | None:
        # A small public exponent (e = 3) opens the door to low-exponent and Bleichenbacher-style forgeries.
        public = serialization.load_der_public_key(material.public_key or b"")
        if not isinstance(public, rsa.RSAPublicKey):
            return "it is not an RSA key"
        exponent = public.public_numbers().e
        if exponent < MIN_PUBLIC_EXPONENT:
            return f"its RSA public exponent is {exponent}, below {MIN_PUBLIC_EXPONENT}"
        if public.key_size < MIN_RSA_BITS:
            return f"its RSA modulus has {public.key_size} bits, below {MIN_RSA_BITS}"
        return super().weakness(material)

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
        return pem_public(public)

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
