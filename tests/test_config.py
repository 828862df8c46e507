"""Parsing the services YAML and app relationships (pure)."""

import pytest

from kms_service.config import parse_duration, parse_relationships, parse_service_config
from kms_service.errors import ConfigError

SEED = {
    "vault-kms": {
        "type": "vault-kms:1.12",
        "disk": 512,
        "configuration": {
            "endpoints": {
                "manage_keys": [
                    {"policy": "admin", "key": "vault-sign", "type": "sign"},
                    {"policy": "sign", "key": "vault-sign", "type": "sign"},
                    {"policy": "verify", "key": "vault-sign", "type": "sign"},
                ]
            }
        },
    },
    "db": {"type": "postgresql:15", "disk": 1024},
}


def test_seed_config_parses():
    config = parse_service_config(SEED)
    assert config.name == "vault-kms" and config.version == "1.12" and config.type == "vault-kms:1.12"
    assert config.keys() == {"vault-sign": "ecdsa-p256"}
    assert [g.policy for g in config.endpoints["manage_keys"]] == ["admin", "sign", "verify"]


def test_small_disk_is_accepted_with_a_warning(caplog):
    document = {"kms": dict(SEED["vault-kms"], disk=256)}
    assert parse_service_config(document).disk == 256
    assert "below the 512 MB minimum" in caplog.text


@pytest.mark.parametrize(
    "document, message",
    [
        ({}, "expected a mapping"),
        ({"a": {"type": "redis:7"}}, "no service of type"),
        ({"a": SEED["vault-kms"], "b": SEED["vault-kms"]}, "several vault-kms services"),
        ({"kms": dict(SEED["vault-kms"], disk="big")}, "kms.disk"),
        ({"kms": dict(SEED["vault-kms"], configuration={})}, "kms.configuration.endpoints"),
        ({"kms": dict(SEED["vault-kms"], configuration={"endpoints": {"e": []}})}, "endpoints.e: expected a non-empty"),
        (
            {"kms": dict(SEED["vault-kms"], configuration={"endpoints": {"e": [{"policy": "admin", "key": "k"}]}})},
            "endpoints.e[0].type: required",
        ),
        (
            {
                "kms": dict(
                    SEED["vault-kms"],
                    configuration={"endpoints": {"e": [{"policy": "admin", "key": "k", "type": "sign", "extra": 1}]}},
                )
            },
            "unknown field(s) extra",
        ),
        (
            {
                "kms": dict(
                    SEED["vault-kms"],
                    configuration={"endpoints": {"bad id": [{"policy": "admin", "key": "k", "type": "sign"}]}},
                )
            },
            "invalid endpoint id",
        ),
        (
            {
                "kms": dict(
                    SEED["vault-kms"],
                    configuration={
                        "endpoints": {
                            "a": [{"policy": "admin", "key": "k", "type": "sign"}],
                            "b": [{"policy": "encrypt", "key": "k", "type": "encrypt"}],
                        }
                    },
                )
            },
            "key 'k' is given type 'encrypt' here but 'sign' at",
        ),
    ],
)
def test_config_errors_name_the_place(document, message):
    with pytest.raises(ConfigError) as error:
        parse_service_config(document)
    assert message in error.value.message


def test_relationships_in_both_forms():
    rels = parse_relationships(
        {"relationships": {"a": "vault-kms:manage_keys", "b": {"service": "vault-kms", "endpoint": "sign"}}}
    )
    assert [(r.name, r.service, r.endpoint) for r in rels] == [
        ("a", "vault-kms", "manage_keys"),
        ("b", "vault-kms", "sign"),
    ]


@pytest.mark.parametrize("document", [{}, {"relationships": {"a": "no-colon"}}, {"relationships": {"a": 3}}])
def test_bad_relationships(document):
    with pytest.raises(ConfigError):
        parse_relationships(document)


@pytest.mark.parametrize(
    "text, seconds",
    [("2s", 2), ("1h", 3600), ("8760h", 31536000), ("1h30m", 5400), ("90", 90), ("30d", 2592000), ("1.5h", 5400)],
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "0s", "-1h", "1 h", "١h", "1.h", "h", "1h 2m", "1y", "9" * 20])
def test_bad_durations(text):
    with pytest.raises(ConfigError):
        parse_duration(text)
