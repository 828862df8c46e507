"""Key material and Key snapshots for the pure tests, generated once per session (RSA-4096 takes a while)."""

from __future__ import annotations

import functools
from datetime import UTC, datetime

from kms_service.keyring import Key, KeySettings, KeyVersion
from kms_service.keytypes import KEY_TYPES
from kms_service.material import KeyMaterial

ALL_TYPES = sorted(KEY_TYPES)
AEAD_TYPES = ["aes128-gcm96", "aes256-gcm96", "aes256-gcm-siv", "chacha20-poly1305", "xchacha20-poly1305"]
ECDSA_TYPES = ["ecdsa-p256", "ecdsa-p384", "ecdsa-p521"]
RSA_TYPES = ["rsa-2048", "rsa-3072", "rsa-4096"]
ML_DSA_TYPES = ["ml-dsa-44", "ml-dsa-65", "ml-dsa-87"]
HYBRID_TYPES = ["hybrid-ml-dsa-65-ecdsa-p256", "hybrid-ml-dsa-65-ed25519"]
HPKE_TYPES = ["hpke-mlkem768-x25519", "hpke-x25519"]
SIGNING_TYPES = ["ed25519", *ECDSA_TYPES, *RSA_TYPES, *ML_DSA_TYPES, *HYBRID_TYPES]
ENCRYPTION_TYPES = [*AEAD_TYPES, *RSA_TYPES, *HPKE_TYPES]


@functools.cache
def material(type_name: str, index: int = 0) -> KeyMaterial:
    """The ``index``-th generated material of a type (cached: equal arguments give the same material)."""
    return KEY_TYPES[type_name].generate()


def make_key(
    type_name: str,
    versions: int = 1,
    *,
    materials: dict[int, KeyMaterial] | None = None,
    **settings: object,
) -> Key:
    """A key with ``versions`` versions (material from the cache unless given) and the given settings."""
    kt = KEY_TYPES[type_name]
    now = datetime.now(UTC)
    materials = materials or {v: material(type_name, v) for v in range(1, versions + 1)}
    return Key(
        name="k",
        key_type=kt,
        latest_version=max(materials),
        settings=KeySettings(**settings),  # type: ignore[arg-type]
        generation=1,
        versions={v: KeyVersion(v, now, m, kt) for v, m in materials.items()},
    )
