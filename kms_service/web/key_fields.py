"""The fields that describe keys (the key body, a new key's type, its labels), with descriptions made from
the code that decides them: the key-type registry, ``KeySettings``' defaults and bounds, and what
``Key.body`` shows. A new key type shows in the API's document without an edit here; a new field of the key
body needs its line in ``KEY_BODY`` (tests/test_openapi.py refuses a body field the document leaves out).

``enum_of`` gives the values a field takes, for the OpenAPI document (``web/openapi.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import fields

from kms_service.keyring.settings import (
    MAX_METADATA_ENTRIES,
    MAX_METADATA_KEY_LENGTH,
    MAX_METADATA_VALUE_LENGTH,
    MIN_AUTO_ROTATE_PERIOD,
    KeySettings,
)
from kms_service.keytypes.base import HMAC_DEFAULT_KEY_SIZE, HMAC_MAX_KEY_SIZE, HMAC_MIN_KEY_SIZE, KeyType
from kms_service.keytypes.registry import DEFAULT_KEY_TYPE, KEY_TYPES, ML_DSA, ML_DSA_PARAMETER_SETS, TYPE_ALIASES
from kms_service.web.framework import Field
from kms_service.web.framework import FieldType as T

# Every spelling a write accepts for a new key's type (``canonical_type``).
TYPE_SPELLINGS = (*KEY_TYPES, *TYPE_ALIASES, ML_DSA)


def _json(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _default(name: str) -> str:
    """A setting's default for a new key, as JSON shows it."""
    return _json(next(f.default for f in fields(KeySettings) if f.name == name))


def _names(predicate: Callable[[KeyType], bool]) -> str:
    """The registry's types for which ``predicate`` holds."""
    return ", ".join(name for name, kt in KEY_TYPES.items() if predicate(kt))


def _one_of(names: Iterable[str]) -> str:
    return ", ".join(names)


NEW_KEY_TYPE = Field(
    "type",
    T.STRING,
    f"Key type of a new key (default {DEFAULT_KEY_TYPE}): one of {_one_of(KEY_TYPES)}; also "
    f"{_one_of(TYPE_ALIASES)} (the same as {_one_of(TYPE_ALIASES.values())}) and {ML_DSA} with parameter_set.",
)
IMPORT_KEY_TYPE = Field("type", T.STRING, f"Key type (default {DEFAULT_KEY_TYPE}): one of {_one_of(KEY_TYPES)}.")
PARAMETER_SET = Field(
    "parameter_set",
    T.STRING,
    f"type={ML_DSA} (Vault Enterprise's spelling): {_one_of(ML_DSA_PARAMETER_SETS)}.",
)
NEW_KEY_SIZE = Field(
    "key_size",
    T.INT,
    f"{_names(lambda kt: kt.variable_key_size)} keys: key size in bytes ({HMAC_MIN_KEY_SIZE} to {HMAC_MAX_KEY_SIZE}; "
    f"0 or absent: {HMAC_DEFAULT_KEY_SIZE}).",
)
CUSTOM_METADATA = Field(
    "custom_metadata",
    T.MAP,
    f"Labels: a map of strings (at most {MAX_METADATA_ENTRIES}; keys up to {MAX_METADATA_KEY_LENGTH}, values up to "
    f"{MAX_METADATA_VALUE_LENGTH} characters), replaced whole. LIST keys with ?metadata.<label>=<value> to filter.",
)

KEY_TYPE_OUT = Field("type", T.STRING, f"The key type: one of {_one_of(KEY_TYPES)}.")
KEY_BODY = (
    Field("name", T.STRING, "The key's name."),
    KEY_TYPE_OUT,
    Field("latest_version", T.INT, "The newest version (versions start at 1)."),
    Field("min_decryption_version", T.INT, "The oldest version that may decrypt or verify."),
    Field("min_encryption_version", T.INT, "The oldest version that may encrypt or sign (0: latest only)."),
    Field(
        "min_available_version",
        T.INT,
        f"Versions below it were trimmed (keys/:name/trim) and are gone; {_default('min_available_version')} "
        "until a trim.",
    ),
    Field("deletion_allowed", T.BOOL, f"Whether the key may be deleted (default {_default('deletion_allowed')})."),
    Field("exportable", T.BOOL, f"Whether the key may be exported (default {_default('exportable')})."),
    Field(
        "allow_plaintext_backup",
        T.BOOL,
        f"Whether a plaintext backup is allowed (default {_default('allow_plaintext_backup')}).",
    ),
    Field(
        "derived",
        T.BOOL,
        "Whether each request needs a context, from which a per-context key is derived (HKDF-SHA256); set when "
        f"the key is created (default {_default('derived')}). Types that can be derived: "
        f"{_names(lambda kt: kt.supports_derivation)}.",
    ),
    Field("supports_encryption", T.BOOL, "Whether the key encrypts."),
    Field("supports_decryption", T.BOOL, "Whether the key decrypts."),
    Field("supports_signing", T.BOOL, "Whether the key signs."),
    Field("supports_derivation", T.BOOL, "Whether the key type supports derivation."),
    Field(
        "auto_rotate_period",
        T.INT,
        f"Seconds between automatic rotations: 0 (off) or at least {MIN_AUTO_ROTATE_PERIOD} (default "
        f"{_default('auto_rotate_period')}).",
    ),
    Field("imported_key", T.BOOL, "Whether the latest version was imported (a rotation here clears it)."),
    Field(
        "imported_key_allow_rotation",
        T.BOOL,
        "Only for an imported key: whether it may be rotated here (import's allow_rotation).",
    ),
    Field("key_size", T.INT, f"Only for {_names(lambda kt: kt.variable_key_size)}: the key's size in bytes."),
    Field(
        "keys",
        T.MAP,
        "Live versions (min_decryption_version to latest_version): version → creation time (unix seconds) for "
        f"{_names(lambda kt: kt.symmetric and kt.lists_versions)}; version → {{name, public_key, "
        f"certificate_chain, creation_time}} for {_names(lambda kt: not kt.symmetric)}. Absent for "
        f"{_names(lambda kt: not kt.lists_versions)}.",
    ),
    Field("soft_deleted", T.BOOL, "Only when the key is soft-deleted (true): refused for every use until restored."),
    Field("retain_versions", T.INT, "Only when set: how many of the newest versions stay decryptable."),
    Field("next_rotation_retires", T.LIST, "With retain_versions: the versions the next rotation would retire."),
    Field("custom_metadata", T.MAP, "Only when set: the key's labels."),
    Field("kdf", T.STRING, "Only for a derived key: the derivation, hkdf_sha256."),
    Field("convergent_encryption", T.BOOL, "Only for a derived key: equal plaintext and context, equal ciphertext."),
    Field("convergent_encryption_version", T.INT, "Only for a convergent key: -1, as Vault shows it."),
)

# Each field (the object itself) with the values it takes.
ENUMS: tuple[tuple[Field, tuple[str, ...]], ...] = (
    (KEY_TYPE_OUT, tuple(KEY_TYPES)),
    (NEW_KEY_TYPE, TYPE_SPELLINGS),
    (IMPORT_KEY_TYPE, tuple(KEY_TYPES)),
    (PARAMETER_SET, ML_DSA_PARAMETER_SETS),
)


def enum_of(f: Field) -> tuple[str, ...] | None:
    """The values ``f`` takes, when the code fixes them."""
    return next((values for field, values in ENUMS if field is f), None)
