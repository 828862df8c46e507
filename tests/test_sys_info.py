"""What Vault's clients ask a server before they use it (sys/init, sys/auth, path-help, sys/internal/ui/mounts,
sys/version-history, the version string), through bao, hvac and curl-like requests, each answer compared with
OpenBao's own server."""

from __future__ import annotations

import json

import pytest
import requests
from baocli import bao, bao_json
from openbao import dev_server

import kms_service

# The HTTP surface: the database plays no part here.
pytestmark = pytest.mark.sqlite_only


@pytest.fixture(scope="module")
def openbao():
    with dev_server() as url:
        root = {"X-Vault-Token": "root"}
        requests.post(f"{url}/v1/sys/mounts/transit", headers=root, json={"type": "transit"}, timeout=10)
        requests.post(f"{url}/v1/transit/keys/vault-enc", headers=root, json={"type": "chacha20-poly1305"}, timeout=10)
        yield url


@pytest.fixture(scope="module")
def root(shared_server):
    return shared_server.root_token()


def _send(url, method, path, token=None, body=None):
    headers = {"X-Vault-Token": token} if token else {}
    return requests.request(method, f"{url}/v1/{path}", headers=headers, json=body, timeout=10)


def test_init_status_is_initialized_as_openbao_says(shared_server, openbao):
    ours, theirs = _send(shared_server.url, "GET", "sys/init"), _send(openbao, "GET", "sys/init")
    assert ours.status_code == theirs.status_code == 200
    assert ours.json() == theirs.json() == {"initialized": True}
    assert shared_server.client(None).sys.is_initialized() is True
    result = bao(shared_server, "", "operator", "init", "-status")
    assert result.returncode == 0 and "initialized" in result.stdout.lower()


def test_a_second_init_is_refused_in_vaults_words(shared_server, openbao):
    body = {"secret_shares": 1, "secret_threshold": 1}
    ours, theirs = _send(shared_server.url, "PUT", "sys/init", body=body), _send(openbao, "PUT", "sys/init", body=body)
    assert ours.status_code == theirs.status_code == 400
    assert ours.json() == theirs.json() == {"errors": ["Vault is already initialized"]}


def test_auth_list_shows_the_token_method_with_openbaos_fields(shared_server, root, openbao):
    ours = _send(shared_server.url, "GET", "sys/auth", root).json()
    theirs = _send(openbao, "GET", "sys/auth", "root").json()
    assert set(ours["data"]) == {"token/"}
    assert ours["token/"] == ours["data"]["token/"]  # also at the top level, as Vault answers
    assert set(ours["data"]["token/"]) == set(theirs["data"]["token/"])
    assert ours["data"]["token/"]["type"] == "token"
    assert ours["data"]["token/"]["config"] == theirs["data"]["token/"]["config"]
    listed = json.loads(bao(shared_server, root, "auth", "list", "-format=json").stdout)
    assert listed["token/"]["type"] == "token"
    assert "token/" in shared_server.client(root).sys.list_auth_methods()["data"]


def test_token_tune_reads_as_openbao_and_a_write_is_refused(shared_server, root, openbao):
    ours = _send(shared_server.url, "GET", "sys/auth/token/tune", root).json()
    theirs = _send(openbao, "GET", "sys/auth/token/tune", "root").json()
    # Intended differences: the longest token life is --max-token-ttl (one year unless set), not 768h; and
    # OpenBao takes the write, while here token lifetimes are the server's settings, and a setting it would
    # not honour is refused rather than ignored.
    assert ours["data"].pop("max_lease_ttl") == 365 * 24 * 3600 and theirs["data"].pop("max_lease_ttl") == 768 * 3600
    assert ours["data"] == theirs["data"]
    refused = _send(shared_server.url, "POST", "sys/auth/token/tune", root, {"default_lease_ttl": "1h"})
    assert refused.status_code == 400
    assert "server's settings" in refused.json()["errors"][0]
    assert _send(shared_server.url, "GET", "sys/auth/userpass/tune", root).status_code == 400


def test_the_auth_list_needs_a_token_that_may_read_it(shared_server, openbao):
    limited = shared_server.endpoint_token("encrypter")
    assert _send(shared_server.url, "GET", "sys/auth", limited).status_code == 403
    assert _send(shared_server.url, "GET", "sys/auth").status_code == 403


def test_path_help_describes_the_path_from_the_table(shared_server, root, openbao):
    ours = _send(shared_server.url, "GET", "transit/encrypt/vault-enc?help=1", root)
    theirs = _send(openbao, "GET", "transit/encrypt/vault-enc?help=1", "root")
    assert ours.status_code == theirs.status_code == 200
    assert set(ours.json()) == set(theirs.json()) == {"help", "openapi", "see_also"}
    text = ours.json()["help"]
    assert "Request:        transit/encrypt/vault-enc" in text and "plaintext" in text
    assert "/transit/encrypt/{name}" in ours.json()["openapi"]["paths"]
    printed = bao(shared_server, root, "path-help", "transit/encrypt/vault-enc").stdout
    assert "## PARAMETERS" in printed and "plaintext" in printed
    # Help needs a valid token, as OpenBao's does; an unknown path is a 404.
    assert _send(shared_server.url, "GET", "transit/encrypt/vault-enc?help=1").status_code == 403
    assert _send(openbao, "GET", "transit/encrypt/vault-enc?help=1").status_code == 403
    assert _send(shared_server.url, "GET", "sys/nothing-here?help=1", root).status_code == 404


def test_ui_mounts_show_what_the_token_reaches(shared_server, root, openbao):
    anonymous = _send(shared_server.url, "GET", "sys/internal/ui/mounts").json()
    assert (
        anonymous["data"]
        == _send(openbao, "GET", "sys/internal/ui/mounts").json()["data"]
        == {
            "auth": {},
            "secret": {},
        }
    )
    everything = _send(shared_server.url, "GET", "sys/internal/ui/mounts", root).json()["data"]
    assert {"transit/", "sys/"} <= set(everything["secret"]) and set(everything["auth"]) == {"token/"}
    limited = _send(shared_server.url, "GET", "sys/internal/ui/mounts", shared_server.endpoint_token("encrypter"))
    # Its grant reaches transit/; the default policy (capabilities-self, wrapping) reaches sys/, as in OpenBao.
    assert set(limited.json()["data"]["secret"]) == {"transit/", "sys/"}
    made = _send(openbao, "POST", "auth/token/create", "root", {"policies": ["default"]}).json()
    default_only = _send(openbao, "GET", "sys/internal/ui/mounts", made["auth"]["client_token"]).json()["data"]
    assert "sys/" in default_only["secret"] and "transit/" not in default_only["secret"]

    one = _send(shared_server.url, "GET", "sys/internal/ui/mounts/transit", root).json()["data"]
    theirs = _send(openbao, "GET", "sys/internal/ui/mounts/transit", "root").json()["data"]
    assert set(one) == set(theirs) and one["path"] == theirs["path"] == "transit/"
    ours_missing = _send(shared_server.url, "GET", "sys/internal/ui/mounts/nope", root)
    theirs_missing = _send(openbao, "GET", "sys/internal/ui/mounts/nope", "root")
    assert ours_missing.status_code == theirs_missing.status_code == 403
    assert ours_missing.json() == theirs_missing.json()


def test_one_version_string_everywhere(shared_server, root, openbao):
    version = kms_service.VAULT_API_VERSION
    health = _send(shared_server.url, "GET", "sys/health").json()
    seal = _send(shared_server.url, "GET", "sys/seal-status").json()
    assert health["version"] == seal["version"] == version
    assert health["kms_service_version"] == seal["kms_service_version"] == kms_service.__version__
    assert bao_json(shared_server, root, "status")["version"] == version

    history = _send(shared_server.url, "LIST", "sys/version-history", root).json()["data"]
    theirs = _send(openbao, "LIST", "sys/version-history", "root").json()["data"]
    assert set(history) == set(theirs) == {"keys", "key_info"}
    assert history["keys"] == [version]
    assert set(theirs["key_info"][theirs["keys"][0]]) <= set(history["key_info"][version])
    limited = shared_server.endpoint_token("encrypter")
    assert _send(shared_server.url, "LIST", "sys/version-history", limited).status_code == 403


def test_the_openapi_document_lists_the_new_paths(shared_server):
    paths = json.loads(_send(shared_server.url, "GET", "sys/openapi").text)["paths"]
    assert {"/sys/init", "/sys/auth", "/sys/auth/{path}/tune", "/sys/internal/ui/mounts"} <= set(paths)
    assert "/sys/version-history" in paths
