"""Parsing the services YAML and app relationships (pure), and the commands that read them refusing a bad file."""

from pathlib import Path

import pytest
from processes import cli_env, run_cli, serve_exit

from kms_service.config import (
    Relationship,
    load_relationships,
    load_service_config,
    parse_duration,
    parse_relationships,
    parse_service_config,
)
from kms_service.errors import ConfigError

CONFIG = Path(__file__).resolve().parent / "data" / "services.yaml"

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


# A key given twice in one mapping: YAML keeps the last one silently (the first endpoint's grants would vanish).
DUPLICATE_ENDPOINT = """\
kms:
    type: vault-kms:1.12
    configuration:
        endpoints:
            signer: [{policy: sign, key: vault-sign, type: sign}]
            crypto: [{policy: encrypt, key: vault-enc, type: encrypt}]
            signer: [{policy: verify, key: vault-sign, type: sign}]
"""


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (DUPLICATE_ENDPOINT, "line 7: key 'signer' is given twice in one mapping (first on line 5)"),
        (
            "kms:\n  type: vault-kms:1.12\n  type: vault-kms:1.6\n",
            "line 3: key 'type' is given twice in one mapping (first on line 2)",
        ),
        ("a: {b: 1, c: 2, b: 3}\n", "line 1: key 'b' is given twice in one mapping (first on line 1)"),
        ("- x: 1\n  y: 2\n  x: 1\n", "line 3: key 'x' is given twice in one mapping (first on line 1)"),
    ],
    ids=["endpoint", "service-field", "flow-mapping", "in-a-list"],
)
def test_a_key_given_twice_anywhere_is_an_error_naming_its_line(tmp_path, text, message):
    path = tmp_path / "services.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as services:
        load_service_config(path)
    with pytest.raises(ConfigError) as app:
        load_relationships(path)
    for error in (services.value, app.value):
        assert error.message == f"{path}: {message}", error.message


def test_a_merge_key_may_be_overridden(tmp_path):
    """``<<`` brings another mapping's keys in; a key written after it overrides them (YAML's meaning)."""
    path = tmp_path / "app.yaml"
    path.write_text(
        "base: &b {service: kms, endpoint: crypto}\nrelationships:\n  a:\n    <<: *b\n    endpoint: signer\n"
    )
    assert load_relationships(path) == [Relationship("a", "kms", "signer")]


def test_config_check_serve_and_relationships_refuse_a_duplicate_in_one_line(tmp_path, database_url, data_dir):
    services = tmp_path / "services.yaml"
    services.write_text(DUPLICATE_ENDPOINT)
    app = tmp_path / "app.yaml"
    app.write_text("relationships:\n  kms: kms:crypto\n  kms: kms:signer\n")
    env = cli_env(database_url, data_dir)
    expected = f"Error: {services}: line 7: key 'signer' is given twice in one mapping (first on line 5)"
    for result in (
        run_cli(["config", "check", str(services)], env, check=False),
        serve_exit(services, env),
        run_cli(["relationships", "--config", str(services), "--app", str(app)], env, check=False),
    ):
        assert result.returncode == 1, result.stdout + result.stderr
        assert result.stderr.strip().splitlines() == [expected], result.stderr
    relationships = run_cli(["relationships", "--config", str(CONFIG), "--app", str(app)], env, check=False)
    assert relationships.returncode == 1
    assert relationships.stderr.strip() == (
        f"Error: {app}: line 3: key 'kms' is given twice in one mapping (first on line 2)"
    )
    assert not list(data_dir.glob("*")), "nothing was created"
