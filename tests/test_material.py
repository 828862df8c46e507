"""The key material envelope and the key settings' write rules (pure, no I/O)."""

from __future__ import annotations

from dataclasses import fields
from datetime import UTC, datetime, timedelta

import pytest

from kms_service.errors import InvalidRequest, RefusedAsServerError
from kms_service.keyring import KeyConfigChange, KeySettings, KeyVersion
from kms_service.keytypes import KEY_TYPES, public_key_pem
from kms_service.material import HMAC_KEY_SIZE, KeyMaterial, Origin
from kms_service.storage import models as m


@pytest.mark.parametrize("type_name", sorted(KEY_TYPES))
def test_every_type_generates_an_envelope_that_round_trips(type_name):
    key_type = KEY_TYPES[type_name]
    material = key_type.generate()
    assert len(material.hmac_key) == HMAC_KEY_SIZE and material.origin == Origin.GENERATED
    assert material.has_private_key and key_type.load(material) is not None
    # Asymmetric types keep their PKIX public key beside the private one (none exists for the KEM pair).
    # (none exists for the KEM pair, and a hybrid signing key has two: shown from the private keys).
    no_single_public_key = type_name == "hpke-mlkem768-x25519" or type_name.startswith("hybrid-")
    assert (material.public_key is not None) == (not key_type.symmetric and not no_single_public_key)
    assert KeyMaterial.from_bytes(material.to_bytes()) == material
    # Two versions never share an HMAC key.
    assert key_type.generate().hmac_key != material.hmac_key


def test_legacy_raw_keys_get_their_public_key_and_a_fresh_hmac_key():
    ecdsa = KEY_TYPES["ecdsa-p256"]
    original = ecdsa.generate()
    upgraded = KeyMaterial.upgrade_legacy(original.key, ecdsa.public_key(original.key))
    assert upgraded.key == original.key and upgraded.public_key == original.public_key
    assert upgraded.origin == Origin.UPGRADED and upgraded.hmac_key != original.hmac_key


@pytest.mark.parametrize("blob", [b"{}", b'{"format": 2, "key": "", "hmac_key": ""}', b"[]"])
def test_unknown_envelope_formats_are_refused(blob):
    with pytest.raises(ValueError):
        KeyMaterial.from_bytes(blob)


def test_envelope_repr_hides_secrets():
    material = KEY_TYPES["chacha20-poly1305"].generate()
    assert material.key.hex() not in repr(material) and str(material.key) not in repr(material)


def test_crypto_objects_are_built_on_first_use_only():
    key_type = KEY_TYPES["ecdsa-p256"]
    version = KeyVersion(1, datetime.now(UTC), key_type.generate(), key_type)
    assert not version.loaded
    handle = version.handle
    assert version.loaded and version.handle is handle


def test_every_setting_has_a_column_of_the_same_name():
    columns = set(m.Key.__table__.columns.keys())
    assert {f.name for f in fields(KeySettings)} <= columns


CONFIG_CASES = {
    "min decryption raised": (KeySettings(), KeyConfigChange(min_decryption_version=3), 3, "min_decryption_version", 3),
    "zero forced to one": (KeySettings(), KeyConfigChange(min_decryption_version=0), 3, "min_decryption_version", 1),
    "one-way exportable": (KeySettings(exportable=True), KeyConfigChange(exportable=False), 3, "exportable", True),
    "deletion toggles": (
        KeySettings(deletion_allowed=True),
        KeyConfigChange(deletion_allowed=False),
        1,
        "deletion_allowed",
        False,
    ),
    "auto rotate an hour": (KeySettings(), KeyConfigChange(auto_rotate_period=3600), 1, "auto_rotate_period", 3600),
    "auto rotate off": (
        KeySettings(auto_rotate_period=7200),
        KeyConfigChange(auto_rotate_period=0),
        1,
        "auto_rotate_period",
        0,
    ),
}


@pytest.mark.parametrize(("settings", "change", "latest", "field", "expected"), CONFIG_CASES.values(), ids=CONFIG_CASES)
def test_config_changes(settings, change, latest, field, expected):
    result, _warnings = settings.configured(change, latest)
    assert getattr(result, field) == expected


CONFIG_ERRORS = {
    "negative decryption": (KeySettings(), KeyConfigChange(min_decryption_version=-1), 3, "cannot be negative"),
    "decryption above latest": (KeySettings(), KeyConfigChange(min_decryption_version=4), 3, "latest key version is 3"),
    "encryption below decryption": (
        KeySettings(),
        KeyConfigChange(min_decryption_version=3, min_encryption_version=2),
        3,
        "must be greater than or equal",
    ),
    "below trimmed": (
        KeySettings(min_available_version=2, min_decryption_version=2, min_encryption_version=3),
        KeyConfigChange(min_decryption_version=1),
        3,
        "less then min available",
    ),
    "short auto rotate": (KeySettings(), KeyConfigChange(auto_rotate_period=60), 1, "at least an hour"),
}


@pytest.mark.parametrize(("settings", "change", "latest", "message"), CONFIG_ERRORS.values(), ids=CONFIG_ERRORS)
def test_config_errors(settings, change, latest, message):
    with pytest.raises(InvalidRequest, match=message):
        settings.configured(change, latest)


def test_trim_rules():
    ready = KeySettings(min_decryption_version=3, min_encryption_version=4)
    assert ready.trimmed(3).min_available_version == 3
    for settings, value, message in [
        (ready, 0, "should be positive"),
        (ready, -1, "cannot be negative"),
        (KeySettings(min_decryption_version=3), 2, "minimum encryption version is not set"),
        (ready, 4, "greater than minimum decryption version"),
        (KeySettings(min_decryption_version=5, min_encryption_version=4), 5, "greater than minmum encryption"),
        (ready.trimmed(3), 2, "cannot be decremented"),
    ]:
        with pytest.raises(InvalidRequest, match=message):
            settings.trimmed(value)


def test_deletion_and_auto_rotation_rules():
    with pytest.raises(InvalidRequest, match="deletion is not allowed"):
        KeySettings().check_deletable()
    KeySettings(deletion_allowed=True).check_deletable()
    created = datetime.now(UTC) - timedelta(hours=2)
    assert KeySettings(auto_rotate_period=3600).auto_rotation_due(created, datetime.now(UTC))
    assert not KeySettings(auto_rotate_period=3 * 3600).auto_rotation_due(created, datetime.now(UTC))
    assert not KeySettings().auto_rotation_due(created, datetime.now(UTC))


def test_public_key_only_envelopes_round_trip():
    ecdsa = KEY_TYPES["ecdsa-p384"]
    full = ecdsa.generate()
    public_only = ecdsa.import_public_key(public_key_pem(full.public_key))
    assert public_only.key == b"" and not public_only.has_private_key and full.has_private_key
    assert KeyMaterial.from_bytes(public_only.to_bytes()) == public_only
    assert public_only.public_key == full.public_key and public_only.origin == Origin.IMPORTED


NEW_KEYS = {
    "defaults": ("aes256-gcm96", {}, KeySettings()),
    "derived": ("chacha20-poly1305", {"derived": True}, KeySettings(derived=True)),
    "convergent": (
        "xchacha20-poly1305",
        {"derived": True, "convergent_encryption": True},
        KeySettings(derived=True, convergent_encryption=True),
    ),
    "derived ed25519": ("ed25519", {"derived": True}, KeySettings(derived=True)),
    "flags": (
        "rsa-2048",
        {"exportable": True, "allow_plaintext_backup": True, "auto_rotate_period": 3600},
        KeySettings(exportable=True, allow_plaintext_backup=True, auto_rotate_period=3600),
    ),
    "hmac default size": ("hmac", {"key_size": 0}, KeySettings()),
    "hmac 512": ("hmac", {"key_size": 512}, KeySettings()),
}


@pytest.mark.parametrize(("type_name", "arguments", "expected"), NEW_KEYS.values(), ids=NEW_KEYS)
def test_settings_for_a_new_key(type_name, arguments, expected):
    assert KeySettings.for_new_key(type_name, **arguments) == expected


NEW_KEY_ERRORS = {
    # Vault's order: auto-rotate period, convergent without derived, type, key_size, then per-type rules.
    "short period": (
        "rsa-2048",
        {"auto_rotate_period": 59, "convergent_encryption": True},
        InvalidRequest,
        "auto rotate period must be 0 to disable or at least an hour",
    ),
    "negative period": (
        "aes256-gcm96",
        {"auto_rotate_period": -1},
        InvalidRequest,
        "auto rotate period must be 0 to disable or at least an hour",
    ),
    "convergent alone": (
        "bogus",
        {"convergent_encryption": True},
        InvalidRequest,
        "convergent encryption requires derivation to be enabled",
    ),
    "unknown type": ("bogus", {"key_size": 7}, InvalidRequest, "unknown key type"),
    "key_size on aes": (
        "aes256-gcm96",
        {"key_size": 32},
        InvalidRequest,
        "key_size is not valid for algorithm aes256-gcm96",
    ),
    "key_size small": ("hmac", {"key_size": 31}, InvalidRequest, "invalid key_size 31"),
    "key_size big": ("hmac", {"key_size": 513, "derived": True}, InvalidRequest, "invalid key_size 513"),
    "derived rsa": (
        "rsa-4096",
        {"derived": True},
        RefusedAsServerError,
        "key derivation and convergent encryption not supported for keys of type rsa-4096",
    ),
    "derived ecdsa": (
        "ecdsa-p384",
        {"derived": True, "convergent_encryption": True},
        RefusedAsServerError,
        "key derivation and convergent encryption not supported for keys of type ecdsa-p384",
    ),
    "derived hmac": (
        "hmac",
        {"derived": True},
        RefusedAsServerError,
        "key derivation and convergent encryption not supported for keys of type hmac",
    ),
    "convergent ed25519": (
        "ed25519",
        {"derived": True, "convergent_encryption": True},
        RefusedAsServerError,
        "convergent encryption not supported for keys of type ed25519",
    ),
}


@pytest.mark.parametrize(("type_name", "arguments", "error", "message"), NEW_KEY_ERRORS.values(), ids=NEW_KEY_ERRORS)
def test_settings_for_a_new_key_refused(type_name, arguments, error, message):
    with pytest.raises(error) as excinfo:
        KeySettings.for_new_key(type_name, **arguments)
    assert excinfo.value.message == message
