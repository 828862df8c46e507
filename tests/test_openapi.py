"""The OpenAPI document is generated from the path table: it is valid OpenAPI 3, it lists every route of the
table, and every operation it lists is really routed (never 404 unsupported path, never 405)."""

from __future__ import annotations

import base64
import functools
import json
import re
from dataclasses import fields as dataclass_fields
from datetime import timedelta

import pytest
import requests
from keymaterial import make_key
from openapi_spec_validator import validate

from kms_service.keyring.settings import MIN_AUTO_ROTATE_PERIOD, KeySettings
from kms_service.keytypes.registry import DEFAULT_KEY_TYPE, KEY_TYPES, ML_DSA, TYPE_ALIASES
from kms_service.web.paths import TABLE

# The HTTP surface: the database plays no part here (tests of storage run on both).
pytestmark = pytest.mark.sqlite_only


@pytest.fixture
def server(shared_server):
    """The module's server: each test here reads, or makes keys, tokens and policies of its own names."""
    return shared_server


SAMPLE_PARAMS = {"name": {"transit/sign": "vault-sign", "transit/verify": "vault-sign"}, "hash": "sha2-256"}
INPUT = base64.b64encode(b"openapi").decode()


@pytest.fixture
def spec(server):
    response = requests.get(f"{server.url}/v1/sys/openapi", timeout=30)  # no token: it is the API's shape only
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    return response.json()


def test_the_document_is_valid_openapi_3_and_also_served_at_vaults_path(server, spec):
    validate(spec)
    assert spec["openapi"].startswith("3.")
    assert spec["servers"] == [{"url": "/v1"}]
    vaults = requests.get(f"{server.url}/v1/sys/internal/specs/openapi", timeout=30)
    assert vaults.status_code == 200 and vaults.json() == spec


def test_every_route_of_the_table_is_in_the_document(spec):
    documented = {(url, method) for url, item in spec["paths"].items() for method in item}
    expected = set()
    for path in TABLE:
        for pattern in path.patterns:
            url = "/" + "/".join("{" + s[1:] + "}" if s.startswith((":", "*")) else s for s in pattern)
            for method in path.operations:
                expected.add((url, "get" if method == "LIST" else method.lower()))
    assert expected == documented
    encrypt = spec["paths"]["/transit/encrypt/{name}"]["post"]
    assert [p["name"] for p in encrypt["parameters"]] == ["name"]
    ref = encrypt["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    body = spec["components"]["schemas"][ref.rsplit("/", 1)[1]]
    assert body["properties"]["plaintext"]["format"] == "byte"
    assert body["properties"]["key_version"]["type"] == "integer"
    item = body["properties"]["batch_input"]["items"]
    assert item["required"] == ["plaintext"] and "reference" in item["properties"]
    assert spec["paths"]["/transit/keys"]["get"]["parameters"][0]["name"] == "list"
    assert spec["paths"]["/sys/health"]["get"]["security"] == []


def _url(template: str) -> str:
    prefix = "/".join(template.strip("/").split("/")[:2])
    name = SAMPLE_PARAMS["name"].get(prefix, "vault-enc")
    return template.replace("{name}", name).replace("{hash}", SAMPLE_PARAMS["hash"])


def test_every_operation_in_the_document_is_routed(server, spec):
    token = server.call(server.kms.tokens.create(["root"], timedelta(hours=1)))[0]
    for template, item in spec["paths"].items():
        for method, operation in item.items():
            query = {p["name"]: "true" for p in operation.get("parameters", []) if p["in"] == "query"}
            body = {"input": INPUT, "plaintext": INPUT} if method == "post" else None
            response = requests.request(
                method,
                f"{server.url}/v1{_url(template)}",
                params=query,
                json=body,
                headers={"X-Vault-Token": token},
                timeout=30,
            )
            where = f"{method.upper()} {template}: {response.status_code} {response.text[:200]}"
            # Routed: not a 405, and no 404 but Vault's "nothing there" (an empty error list: the path's
            # handler ran and found no such object, e.g. a policy named like the test key).
            assert response.status_code != 405, where
            assert response.status_code != 404 or response.json()["errors"] == [], where
            if response.status_code >= 400:
                assert response.json()["errors"] not in (["unsupported path"], ["unsupported operation"]), where


# -- the document says what the code does ---------------------------------------------------------------------

TYPE_SPELLINGS = {*KEY_TYPES, *TYPE_ALIASES, ML_DSA}
WORD = re.compile(r"(?<![\w-])[a-z0-9][a-z0-9-]*[a-z0-9](?![\w-])")
DOCUMENTED_DEFAULT = re.compile(r"\(default ([^)\s]+)\)")
ALWAYS = re.compile(r"\bAlways ([^\s.(]+)")


def _type_names(text: str) -> set[str]:
    """The words of ``text`` that name a key type, or look like one (lower-case parts joined by '-')."""
    return {word for word in WORD.findall(text) if word in TYPE_SPELLINGS or "-" in word}


def _schema(spec, ref_holder):
    return spec["components"]["schemas"][ref_holder["$ref"].rsplit("/", 1)[1]]


def _request_fields(spec, url):
    body = spec["paths"][url]["post"]["requestBody"]["content"]["application/json"]["schema"]
    return _schema(spec, body)["properties"]


def _key_body(spec):
    ok = spec["paths"]["/transit/keys/{name}"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    return _schema(spec, ok)["allOf"][1]["properties"]["data"]["properties"]


def test_the_key_types_documented_are_the_registrys(spec):
    """Every key type field lists the registry's types as its enum and in its description, and names no
    type the registry (or its aliases, at creation) does not have."""
    documented = {
        "key body": _key_body(spec)["type"],
        "create": _request_fields(spec, "/transit/keys/{name}")["type"],
        "import": _request_fields(spec, "/transit/keys/{name}/import")["type"],
    }
    for where, schema in documented.items():
        assert set(KEY_TYPES) <= set(schema.get("enum", ())) <= TYPE_SPELLINGS, where
        named = _type_names(schema["description"])
        assert set(KEY_TYPES) <= named <= TYPE_SPELLINGS, (where, set(KEY_TYPES) ^ named)
    assert documented["key body"]["enum"] == list(KEY_TYPES)  # a key only ever has a registry name


def _sample_keys():
    """Keys that between them show every field of a key body, as the code shows them."""
    aes = KEY_TYPES["aes256-gcm96"]
    yield from (make_key(name) for name in KEY_TYPES)
    yield make_key("aes256-gcm96", derived=True, convergent_encryption=True)
    yield make_key("ed25519", derived=True)
    yield make_key("hmac", materials={1: KEY_TYPES["hmac"].generate(64)})
    yield make_key("aes256-gcm96", materials={1: aes.import_key(bytes(32))}, allow_imported_key_rotation=True)
    yield make_key("aes256-gcm96", 3, min_available_version=2, min_decryption_version=2, min_encryption_version=3)
    yield make_key(
        "aes256-gcm96",
        2,
        auto_rotate_period=MIN_AUTO_ROTATE_PERIOD,
        retain_versions=2,
        custom_metadata={"team": "payments"},
        soft_deleted=True,
        deletion_allowed=True,
        exportable=True,
        allow_plaintext_backup=True,
    )


@functools.cache
def _sample_bodies() -> tuple[dict, ...]:
    return tuple(key.body() for key in _sample_keys())


def test_every_field_of_a_key_body_is_documented(spec):
    documented = set(_key_body(spec))
    shown = {name for body in _sample_bodies() for name in body}
    assert shown == documented, (shown - documented, documented - shown)


def test_no_key_body_description_contradicts_a_key(spec):
    """No description claims a value ("Always ...") a key contradicts, a documented default is what a new key
    shows, and the types ``derived`` names are those a derived key can have."""
    documented = _key_body(spec)
    bodies = _sample_bodies()
    for name, schema in documented.items():
        for claim in ALWAYS.findall(schema["description"]):
            assert all(body[name] == json.loads(claim) for body in bodies if name in body), (name, claim)
    new = make_key(DEFAULT_KEY_TYPE).body()
    for name, schema in documented.items():
        for default in DOCUMENTED_DEFAULT.findall(schema["description"]):
            assert new[name] == json.loads(default), (name, default)
    derivable = {name for name, kt in KEY_TYPES.items() if kt.supports_derivation}
    assert any(body["derived"] for body in bodies)
    assert _type_names(documented["derived"]["description"]) & TYPE_SPELLINGS == derivable


def test_the_version_entries_documented_per_type_are_the_codes(spec):
    """The key body's ``keys``: the types documented with creation times, with public-key entries, or with
    no ``keys`` at all are those whose bodies are so."""
    text = _key_body(spec)["keys"]["description"]
    listed = {
        "seconds": text.split("unix seconds) for ")[1].split(";")[0],
        "entries": text.split("creation_time} for ")[1].split(".")[0],
        "absent": text.split("Absent for ")[1],
    }
    for name in KEY_TYPES:
        body = make_key(name).body()
        shape = "absent" if "keys" not in body else "seconds" if isinstance(body["keys"]["1"], int) else "entries"
        assert name in _type_names(listed[shape]), (name, shape)


def test_documented_defaults_are_the_codes(server, spec):
    """A default a request field documents is the one the code applies: a key written without a type gets
    the documented type, and the settings' defaults are KeySettings'."""
    settings_defaults = {f.name: f.default for f in dataclass_fields(KeySettings)}
    for url in ("/transit/keys/{name}", "/transit/keys/{name}/import"):
        fields = _request_fields(spec, url)
        for name, schema in fields.items():
            if name in settings_defaults and "default" in schema:
                assert schema["default"] == settings_defaults[name], (url, name)
            for default in DOCUMENTED_DEFAULT.findall(schema["description"]):
                assert "default" not in schema or str(schema["default"]).lower() == default, (url, name)
        assert DOCUMENTED_DEFAULT.findall(fields["type"]["description"]) == [DEFAULT_KEY_TYPE], url
    token = server.root_token()
    created = requests.post(f"{server.url}/v1/transit/keys/openapi-default", json={}, headers={"X-Vault-Token": token})
    assert created.status_code in (200, 204), created.text
    read = requests.get(f"{server.url}/v1/transit/keys/openapi-default", headers={"X-Vault-Token": token}, timeout=30)
    assert read.json()["data"]["type"] == DEFAULT_KEY_TYPE
