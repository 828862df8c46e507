"""Hybrid signatures: ML-DSA-65 together with a classical signature (ECDSA P-256 or Ed25519)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from kms_service.errors import InvalidRequest, RefusedAsServerError
from kms_service.keytypes.asymmetric import AsymmetricHandle, AsymmetricKeyType, public_key_pem
from kms_service.keytypes.base import EXPORT_PUBLIC_KEY, EXPORT_SIGNING_KEY, KeyType, SignOptions
from kms_service.keytypes.ecdsa import EcdsaP256
from kms_service.keytypes.eddsa import Ed25519
from kms_service.keytypes.ml_dsa import MlDsa65
from kms_service.material import KeyMaterial, Origin

# The order n of NIST P-256's base point (FIPS 186-5, SP 800-186).
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551


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
    PQ: ClassVar[AsymmetricKeyType] = MlDsa65()
    CLASSICAL: ClassVar[AsymmetricKeyType]
    # The classical part's group order when it is ECDSA: its signatures are made and taken with low S only
    # (s <= n/2), so (r, n - s), which verifies as well, is not a second valid signature of this format.
    CLASSICAL_ORDER: ClassVar[int | None] = None

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
        classical = self.CLASSICAL.sign(handle.classical, data, classical_options)
        if self.CLASSICAL_ORDER is not None:
            r, s = decode_dss_signature(classical)
            if s > self.CLASSICAL_ORDER // 2:
                classical = encode_dss_signature(r, self.CLASSICAL_ORDER - s)
        return _pack(self.PQ.sign(handle.pq, data, options), classical)

    def verify(self, handle: HybridHandle, data: bytes, signature: bytes, options: SignOptions) -> bool:
        try:
            pq, classical = _unpack(signature)
        except ValueError:
            return False
        classical_options = replace(options, marshaling="asn1")
        if self.CLASSICAL_ORDER is not None:
            try:
                _, s = decode_dss_signature(classical)
            except ValueError:
                return False
            if s > self.CLASSICAL_ORDER // 2:
                return False
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
    CLASSICAL_ORDER = P256_ORDER


class HybridMlDsa65Ed25519(_HybridSigning):
    name = "hybrid-ml-dsa-65-ed25519"
    CLASSICAL = Ed25519()
