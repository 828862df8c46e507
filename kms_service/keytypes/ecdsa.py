"""ECDSA on the NIST curves P-256, P-384 and P-521: ASN.1 DER or JWS (r ‖ s) signatures."""

from __future__ import annotations

from typing import Any, ClassVar

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed, decode_dss_signature, encode_dss_signature

from kms_service.errors import InvalidRequest, RefusedAsServerError
from kms_service.keytypes.asymmetric import AsymmetricHandle, AsymmetricKeyType, pem_public
from kms_service.keytypes.base import EXPORT_PUBLIC_KEY, EXPORT_SIGNING_KEY, HASH_NONE, SignOptions, hash_algorithm
from kms_service.material import KeyMaterial


class _Ecdsa(AsymmetricKeyType):
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
        return pem_public(public)

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
