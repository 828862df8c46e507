"""The name → type table: every key type a key can have, the spellings clients may use for them, and the
default."""

from __future__ import annotations

from kms_service.errors import InvalidRequest
from kms_service.keytypes.aead import Aes128Gcm96, Aes256Gcm96, Aes256GcmSiv, ChaCha20Poly1305, XChaCha20Poly1305
from kms_service.keytypes.base import KeyType
from kms_service.keytypes.ecdsa import EcdsaP256, EcdsaP384, EcdsaP521
from kms_service.keytypes.eddsa import Ed25519
from kms_service.keytypes.hpke import HpkeMlKem768X25519, HpkeX25519
from kms_service.keytypes.hybrid import HybridMlDsa65EcdsaP256, HybridMlDsa65Ed25519
from kms_service.keytypes.mac import Aes128Cmac, Aes256Cmac, Hmac
from kms_service.keytypes.ml_dsa import MlDsa44, MlDsa65, MlDsa87
from kms_service.keytypes.rsa import Rsa2048, Rsa3072, Rsa4096

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
ML_DSA = "ml-dsa"  # Vault Enterprise's name for the three, with ``parameter_set``


def canonical_type(name: str, parameter_set: str | None = None) -> str:
    """The registry's name for a type as a client spells it; ``ml-dsa`` needs ``parameter_set``."""
    if name == ML_DSA:
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
