"""Certificate signing requests and certificate chains for signing keys (Vault 1.15's keys/:name/csr and
set-certificate). Pure: cryptography's x509 builders, nothing home-made."""

from __future__ import annotations

from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed448, ed25519

from kms_service.errors import InvalidRequest


def build_csr(private_key: Any, template_pem: str | None) -> str:
    """A CSR signed by ``private_key``; the subject and extensions come from ``template_pem`` when given (its
    own key and signature are ignored, as in Vault)."""
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name([]))
    if template_pem:
        try:
            template = x509.load_pem_x509_csr(template_pem.encode())
        except (ValueError, UnicodeEncodeError):
            raise InvalidRequest("could not parse CSR template") from None
        builder = x509.CertificateSigningRequestBuilder().subject_name(template.subject)
        for extension in template.extensions:
            builder = builder.add_extension(extension.value, extension.critical)
    algorithm = None if isinstance(private_key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey) else hashes.SHA256()
    csr = builder.sign(private_key, algorithm)
    return csr.public_bytes(serialization.Encoding.PEM).decode("ascii")


def checked_chain(chain_pem: str, public_key_der: bytes) -> str:
    """The chain as PEM certificates joined with newlines, leaf first; the leaf must certify this key."""
    try:
        certificates = x509.load_pem_x509_certificates(chain_pem.encode())
    except (ValueError, UnicodeEncodeError):
        raise InvalidRequest("failed to parse the certificate chain: expected PEM certificates, leaf first") from None
    leaf_key = (
        certificates[0]
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    if leaf_key != public_key_der:
        raise InvalidRequest("the leaf certificate's public key does not match the key version's public key")
    return "\n".join(c.public_bytes(serialization.Encoding.PEM).decode("ascii").strip() for c in certificates)
