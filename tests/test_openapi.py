"""The OpenAPI document is generated from the path table: it is valid OpenAPI 3, it lists every route of the
table, and every operation it lists is really routed (never 404 unsupported path, never 405)."""

from __future__ import annotations

import base64
from datetime import timedelta

import pytest
import requests
from openapi_spec_validator import validate

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
