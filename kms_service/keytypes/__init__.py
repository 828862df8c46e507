"""The key-type registry: one class per Vault key type, one place for generate/load/encrypt/sign/export.

The keyring, storage and HTTP layers only talk to the ``KeyType`` interface (``base``) and find a type by
name in ``registry.KEY_TYPES``; each family of types has its own module (``aead``, ``mac``, ``eddsa``,
``ecdsa``, ``rsa``, ``ml_dsa``, ``hybrid``, ``hpke``; ``asymmetric`` is what the asymmetric ones share).
This package exports the registry and the interface; code inside the package imports from the module that
defines a name.

Wire formats are Vault's (transit-api.md §2):

==================== ====================================================== =====================================
type                 ciphertext body / signature                            stored ``KeyMaterial.key``
==================== ====================================================== =====================================
aes128/256-gcm96     nonce(12) ‖ ciphertext ‖ tag(16), AES-GCM              raw key (16 / 32 bytes)
aes256-gcm-siv       nonce(12) ‖ ciphertext ‖ tag(16), AES-GCM-SIV          raw key (32)
chacha20-poly1305    nonce(12) ‖ ciphertext ‖ tag(16)                       raw key (32)
xchacha20-poly1305   nonce(24) ‖ ciphertext ‖ tag(16) (libsodium)           raw key (32)
rsa-2048/3072/4096   RSAES-OAEP SHA-256, MGF1 SHA-256, empty label; or      PKCS#8 DER
                     RSAES-PKCS1-v1_5; signatures RSASSA-PSS or PKCS1-v1_5
ecdsa-p256/384/521   ASN.1 DER ``SEQUENCE{r, s}`` or JWS ``r ‖ s``           PKCS#8 DER
ed25519              pure Ed25519, 64 bytes                                 PKCS#8 DER
ml-dsa-44/65/87      pure ML-DSA (FIPS 204)                                 PKCS#8 DER (seed form)
hybrid-ml-dsa-65-*   length-prefixed ML-DSA-65 ‖ classical signature        length-prefixed pair of PKCS#8 DER
hpke-*               HPKE (RFC 9180) ``enc ‖ ct``                           raw private key
aes128/256-cmac      (only ``cmac``)                                        raw key (16 / 32)
hmac                 (no encryption or signing: only ``hmac``)              raw HMAC key (32..512 bytes)
==================== ====================================================== =====================================

Every version also has its own random 32-byte HMAC key (``KeyMaterial.hmac_key``); for the ``hmac`` type the
key itself is the HMAC key (``KeyType.hmac_key``). A version imported from a public key only has an empty
``key``: it verifies and (RSA) encrypts, but never signs or decrypts.
"""

from kms_service.keytypes.asymmetric import public_key_pem
from kms_service.keytypes.base import (
    CONVERGENT_NONCE_KEY_SIZE,
    EXPORT_CERTIFICATE_CHAIN,
    EXPORT_ENCRYPTION_KEY,
    EXPORT_HMAC_KEY,
    EXPORT_PUBLIC_KEY,
    EXPORT_SIGNING_KEY,
    EXPORT_TYPES,
    HASH_ALGORITHMS,
    HASH_NONE,
    HMAC_DEFAULT_KEY_SIZE,
    HMAC_MAX_KEY_SIZE,
    HMAC_MIN_KEY_SIZE,
    MARSHALING_ALGORITHMS,
    MISSING_CONTEXT,
    NO_PRIVATE_PART_FOR_SIGNING,
    PADDING_SCHEMES,
    SALT_LENGTH_AUTO,
    SALT_LENGTH_HASH,
    SIGN_HASH_ALGORITHMS,
    SIGNATURE_ALGORITHMS,
    DecryptionFailed,
    EncryptOptions,
    KeyType,
    NonceSource,
    PaddingSchemeError,
    SignOptions,
    hash_algorithm,
    hkdf_sha256,
    hmac_digest,
    parse_go_int,
    parse_salt_length,
)
from kms_service.keytypes.hpke import hpke_mlkem768_x25519_public_key
from kms_service.keytypes.registry import (
    DEFAULT_KEY_TYPE,
    KEY_TYPES,
    ML_DSA,
    ML_DSA_PARAMETER_SETS,
    TYPE_ALIASES,
    canonical_type,
    key_type,
)

__all__ = [
    "CONVERGENT_NONCE_KEY_SIZE",
    "DEFAULT_KEY_TYPE",
    "EXPORT_CERTIFICATE_CHAIN",
    "EXPORT_ENCRYPTION_KEY",
    "EXPORT_HMAC_KEY",
    "EXPORT_PUBLIC_KEY",
    "EXPORT_SIGNING_KEY",
    "EXPORT_TYPES",
    "HASH_ALGORITHMS",
    "HASH_NONE",
    "HMAC_DEFAULT_KEY_SIZE",
    "HMAC_MAX_KEY_SIZE",
    "HMAC_MIN_KEY_SIZE",
    "KEY_TYPES",
    "MARSHALING_ALGORITHMS",
    "MISSING_CONTEXT",
    "ML_DSA",
    "ML_DSA_PARAMETER_SETS",
    "NO_PRIVATE_PART_FOR_SIGNING",
    "PADDING_SCHEMES",
    "SALT_LENGTH_AUTO",
    "SALT_LENGTH_HASH",
    "SIGNATURE_ALGORITHMS",
    "SIGN_HASH_ALGORITHMS",
    "TYPE_ALIASES",
    "DecryptionFailed",
    "EncryptOptions",
    "KeyType",
    "NonceSource",
    "PaddingSchemeError",
    "SignOptions",
    "canonical_type",
    "hash_algorithm",
    "hkdf_sha256",
    "hmac_digest",
    "hpke_mlkem768_x25519_public_key",
    "key_type",
    "parse_go_int",
    "parse_salt_length",
    "public_key_pem",
]
