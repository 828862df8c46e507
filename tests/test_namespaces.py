"""Namespaces (kms_service/namespaces.py, service/namespaces.py, web/sys_namespaces.py, the router): OpenBao's
sys/namespaces, the X-Vault-Namespace header and the path prefix, mounts, keys, policies and tokens scoped to
their namespace, escalation across namespaces refused; driven by curl's requests, OpenBao's CLI and hvac, on
the module's shared server (SQLite) and, for storage, on both databases."""

from __future__ import annotations

import base64
import json
import os
import subprocess
from pathlib import Path

import hvac
import pytest
import requests
from baocli import BAO, bao, bao_json
from hvac.exceptions import Forbidden

PLAINTEXT = base64.b64encode(b"one tenant's secret").decode()
TRANSIT_ALL = 'path "transit/*" { capabilities = ["create", "read", "update", "list"] }'


@pytest.fixture(scope="module")
def root(shared_server):
    return shared_server.root_token()


def send(server, token, method, path, namespace=None, **kwargs):
    headers = {"X-Vault-Token": token}
    if namespace is not None:
        headers["X-Vault-Namespace"] = namespace
    return requests.request(method, f"{server.url}/v1/{path}", headers=headers, timeout=30, **kwargs)


def ok(response, status=200):
    assert response.status_code == status, (response.status_code, response.text)
    return response.json() if response.content else None


def make_namespace(server, token, path):
    """``path`` (``a`` or ``a/b``): its last segment created in its parent, by the path-prefix form."""
    parent, _, name = path.rpartition("/")
    return ok(send(server, token, "POST", f"{parent + '/' if parent else ''}sys/namespaces/{name}"))["data"]


def token_in(server, token, namespace, *policies):
    body = ok(send(server, token, "POST", f"{namespace}/auth/token/create", json={"policies": list(policies)}))
    return body["auth"]["client_token"]


# -- sys/namespaces --------------------------------------------------------------------------------------


def test_create_read_list_update_and_delete(shared_server, root):
    created = make_namespace(shared_server, root, "crud")
    assert set(created) == {"custom_metadata", "id", "locked", "path", "tainted", "uuid"}
    assert created["path"] == "crud/" and created["custom_metadata"] == {} and created["locked"] is False
    # PUT on an existing namespace sets its custom metadata; id and uuid stay.
    updated = ok(send(shared_server, root, "PUT", "sys/namespaces/crud", json={"custom_metadata": {"team": "a"}}))
    assert updated["data"]["custom_metadata"] == {"team": "a"}
    assert (updated["data"]["id"], updated["data"]["uuid"]) == (created["id"], created["uuid"])
    assert ok(send(shared_server, root, "GET", "sys/namespaces/crud"))["data"] == updated["data"]
    listed = ok(send(shared_server, root, "LIST", "sys/namespaces"))["data"]
    assert "crud/" in listed["keys"] and listed["key_info"]["crud/"]["path"] == "crud/"

    # Nested: by the path prefix, and by the header; listed relative to the namespace, shown by full path.
    assert make_namespace(shared_server, root, "crud/one")["path"] == "crud/one/"
    two = ok(send(shared_server, root, "POST", "sys/namespaces/two", namespace="crud"))["data"]
    assert two["path"] == "crud/two/"
    inner = ok(send(shared_server, root, "LIST", "sys/namespaces", namespace="crud/"))["data"]
    assert inner["keys"] == ["one/", "two/"] and inner["key_info"]["one/"]["path"] == "crud/one/"
    assert ok(send(shared_server, root, "GET", "crud/sys/namespaces/one"))["data"]["path"] == "crud/one/"
    assert send(shared_server, root, "LIST", "crud/one/sys/namespaces").status_code == 404  # none below

    # OpenBao's refusals, in its words.
    refused = send(shared_server, root, "POST", "sys/namespaces/crud/three")
    assert refused.status_code == 400 and refused.json()["errors"] == ["namespace name cannot contain /"]
    refused = send(shared_server, root, "POST", "sys/namespaces/sys")
    assert refused.json()["errors"] == ['"sys/" is a reserved path and cannot be used as a namespace name']
    refused = send(shared_server, root, "DELETE", "sys/namespaces/crud")
    assert refused.status_code == 400
    assert refused.json()["errors"] == ["unable to delete namespace containing child namespaces"]

    for child in ("one", "two"):
        ok(send(shared_server, root, "DELETE", f"crud/sys/namespaces/{child}"))
    assert ok(send(shared_server, root, "DELETE", "sys/namespaces/crud"))["data"] == {"status": "deleted"}
    assert send(shared_server, root, "GET", "sys/namespaces/crud").status_code == 404
    missing = ok(send(shared_server, root, "DELETE", "sys/namespaces/crud"))
    assert missing["warnings"] == ["requested namespace does not exist"]
    gone = send(shared_server, root, "GET", "sys/mounts", namespace="crud")
    assert gone.status_code == 404 and gone.json()["errors"] == ["namespace not found"]


def test_unknown_namespace_is_a_404(shared_server, root):
    for header in ("nowhere", "nowhere/deeper", "../", "a/../b", "/"):
        answer = send(shared_server, root, "GET", "sys/mounts", namespace=header)
        if header.strip("/"):
            assert answer.status_code == 404 and answer.json()["errors"] == ["namespace not found"], header
        else:
            assert answer.status_code == 200  # an empty header is the root namespace
    # As a path prefix, an unknown namespace is an unknown path (no mount there).
    assert send(shared_server, root, "GET", "nowhere/transit/keys/x").status_code == 404
    assert send(shared_server, root, "GET", "nowhere/sys/mounts").status_code == 404


# -- mounts and keys -------------------------------------------------------------------------------------


def test_mounts_and_keys_belong_to_their_namespace(shared_server, root):
    make_namespace(shared_server, root, "tenant")
    # No transit in a new namespace: the root's transit/ is not reached through it.
    assert send(shared_server, root, "GET", "tenant/transit/keys/vault-enc").status_code == 404
    ok(send(shared_server, root, "POST", "tenant/sys/mounts/transit", json={"type": "transit"}), 204)
    mounts = ok(send(shared_server, root, "GET", "sys/mounts", namespace="tenant"))["data"]
    assert set(mounts) == {"transit/", "sys/"}
    root_mounts = ok(send(shared_server, root, "GET", "sys/mounts"))["data"]
    assert not any(path.startswith("tenant") for path in root_mounts)

    # One key, by the header and by the prefix; the root's transit has no such key.
    ok(send(shared_server, root, "POST", "transit/keys/orders", namespace="tenant"))
    assert ok(send(shared_server, root, "GET", "tenant/transit/keys/orders"))["data"]["name"] == "orders"
    assert send(shared_server, root, "GET", "transit/keys/orders").status_code == 404
    sealed = ok(send(shared_server, root, "POST", "tenant/transit/encrypt/orders", json={"plaintext": PLAINTEXT}))
    ciphertext = sealed["data"]["ciphertext"]
    opened = send(
        shared_server, root, "POST", "transit/decrypt/orders", namespace="tenant", json={"ciphertext": ciphertext}
    )
    assert ok(opened)["data"]["plaintext"] == PLAINTEXT
    assert (
        send(shared_server, root, "POST", "transit/decrypt/orders", json={"ciphertext": ciphertext}).status_code >= 400
    )
    assert ok(send(shared_server, root, "LIST", "tenant/transit/keys"))["data"]["keys"] == ["orders"]

    # A namespace holding a mount is not deleted (its keys are never deleted unasked).
    refused = send(shared_server, root, "DELETE", "sys/namespaces/tenant")
    assert refused.status_code == 400 and "unable to delete namespace containing mounts (transit/)" in refused.text
    ok(send(shared_server, root, "POST", "tenant/transit/keys/orders/config", json={"deletion_allowed": True}))
    ok(send(shared_server, root, "DELETE", "tenant/sys/mounts/transit", params={"force": "true"}), 204)
    ok(send(shared_server, root, "DELETE", "sys/namespaces/tenant"))


def test_mounts_and_namespaces_never_overlap(shared_server, root):
    ok(send(shared_server, root, "POST", "sys/mounts/taken", json={"type": "transit"}), 204)
    refused = send(shared_server, root, "POST", "sys/namespaces/taken")
    assert refused.status_code == 400
    assert refused.json()["errors"] == ["new namespace conflicts with existing mount: taken/"]
    make_namespace(shared_server, root, "space")
    for path, words in (("space", "existing mount at space/"), ("space/inner", "existing mount at space/")):
        refused = send(shared_server, root, "POST", f"sys/mounts/{path}", json={"type": "transit"})
        assert refused.status_code == 400 and refused.json()["errors"] == [words], path
    # Within a namespace, the same rule for its children.
    make_namespace(shared_server, root, "space/kid")
    refused = send(shared_server, root, "POST", "space/sys/mounts/kid", json={"type": "transit"})
    assert refused.status_code == 400 and refused.json()["errors"] == ["existing mount at kid/"]


# -- policies and tokens ---------------------------------------------------------------------------------


def _tenant_with_key(server, root, namespace):
    make_namespace(server, root, namespace)
    ok(send(server, root, "POST", f"{namespace}/sys/mounts/transit", json={"type": "transit"}), 204)
    ok(send(server, root, "POST", f"{namespace}/transit/keys/shared-name"))
    policy = {"policy": TRANSIT_ALL}
    ok(send(server, root, "PUT", f"{namespace}/sys/policies/acl/tenant-admin", json=policy), 204)


def test_policies_and_tokens_stay_in_their_namespace(shared_server, root):
    for namespace in ("alpha", "beta", "alpha/kid"):
        _tenant_with_key(shared_server, root, namespace)
    ok(send(shared_server, root, "POST", "transit/keys/shared-name"))

    # Policies: each namespace lists its own; the same name in two namespaces is two policies.
    assert ok(send(shared_server, root, "LIST", "sys/policies/acl", namespace="alpha"))["data"]["keys"] == [
        "default",
        "tenant-admin",
    ]
    assert "tenant-admin" not in ok(send(shared_server, root, "LIST", "sys/policies/acl"))["data"]["keys"]
    assert send(shared_server, root, "GET", "sys/policies/acl/tenant-admin").status_code == 404
    assert "transit/*" in ok(send(shared_server, root, "GET", "beta/sys/policies/acl/tenant-admin"))["data"]["policy"]

    alpha = token_in(shared_server, root, "alpha", "tenant-admin")
    kid = token_in(shared_server, root, "alpha/kid", "tenant-admin")
    looked = ok(send(shared_server, alpha, "GET", "alpha/auth/token/lookup-self"))["data"]
    assert looked["namespace_path"] == "alpha/" and looked["policies"] == ["default", "tenant-admin"]

    # Its own namespace's transit, by either form.
    encrypt = {"plaintext": PLAINTEXT}
    ok(send(shared_server, alpha, "POST", "alpha/transit/encrypt/shared-name", json=encrypt))
    ok(send(shared_server, alpha, "POST", "transit/encrypt/shared-name", namespace="alpha", json=encrypt))
    # Never the root's, a sibling's, or (for a child's token) its parent's: every form, every trick.
    for token, method, path, namespace in (
        (alpha, "POST", "transit/encrypt/shared-name", None),
        (alpha, "POST", "beta/transit/encrypt/shared-name", None),
        (alpha, "POST", "transit/encrypt/shared-name", "beta"),
        (alpha, "GET", "sys/policies/acl", "beta"),
        (alpha, "POST", "beta/auth/token/create", None),
        (kid, "POST", "alpha/transit/encrypt/shared-name", None),
        (kid, "POST", "transit/encrypt/shared-name", "alpha"),
        (kid, "POST", "transit/encrypt/shared-name", None),
    ):
        answer = send(shared_server, token, method, path, namespace=namespace, json=encrypt)
        assert answer.status_code == 403, (path, namespace, answer.text)
    # The header and the prefix join: alpha + beta/ is alpha/beta/, which does not exist (no sibling reached).
    joined = send(shared_server, alpha, "POST", "beta/transit/encrypt/shared-name", namespace="alpha", json=encrypt)
    assert joined.status_code in (403, 404)
    for trick in ("alpha/../transit/encrypt/shared-name", "alpha/%2e%2e/transit/encrypt/shared-name"):
        answer = requests.post(f"{shared_server.url}/v1/{trick}", headers={"X-Vault-Token": alpha}, json=encrypt)
        assert answer.status_code in (400, 403, 404), trick
    # A namespace's policy names never reach another's: "tenant-admin" in the root names nothing.
    assert send(shared_server, alpha, "GET", "alpha/transit/keys/shared-name").status_code == 200

    # A parent namespace's admin reaches its children (its policy names the child's paths); alpha's policy
    # names only transit/*, so not alpha/kid's.
    assert send(shared_server, alpha, "GET", "alpha/kid/transit/keys/shared-name").status_code == 403
    reach = 'path "kid/transit/*" { capabilities = ["read"] }'
    ok(send(shared_server, root, "PUT", "alpha/sys/policies/acl/kid-reader", json={"policy": reach}), 204)
    reader = token_in(shared_server, root, "alpha", "kid-reader")
    assert send(shared_server, reader, "GET", "alpha/kid/transit/keys/shared-name").status_code == 200
    assert send(shared_server, reader, "GET", "transit/keys/shared-name", namespace="alpha/kid").status_code == 200
    assert send(shared_server, reader, "GET", "alpha/transit/keys/shared-name").status_code == 403
    # A root-namespace token with a policy on ns/transit/* reaches that namespace's transit only (Vault).
    ok(
        send(
            shared_server,
            root,
            "PUT",
            "sys/policies/acl/beta-reader",
            # The default policy's paths are the token's namespace's: another's must be granted (OpenBao).
            json={
                "policy": 'path "beta/transit/*" { capabilities = ["read"] }\n'
                'path "beta/sys/capabilities-self" { capabilities = ["update"] }'
            },
        ),
        204,
    )
    operator = ok(send(shared_server, root, "POST", "auth/token/create", json={"policies": ["beta-reader"]}))["auth"][
        "client_token"
    ]
    assert send(shared_server, operator, "GET", "beta/transit/keys/shared-name").status_code == 200
    assert send(shared_server, operator, "GET", "transit/keys/shared-name", namespace="beta").status_code == 200
    assert send(shared_server, operator, "GET", "alpha/transit/keys/shared-name").status_code == 403
    assert send(shared_server, operator, "GET", "transit/keys/shared-name").status_code == 403
    # Capabilities in a namespace are asked of the path there, as the token's policies name it.
    asked = {"paths": ["transit/keys/shared-name"]}
    capabilities = ok(send(shared_server, operator, "POST", "beta/sys/capabilities-self", json=asked))["data"]
    assert capabilities["transit/keys/shared-name"] == ["read"]
    capabilities = ok(send(shared_server, operator, "POST", "sys/capabilities-self", json=asked))["data"]
    assert capabilities["transit/keys/shared-name"] == ["deny"]


def test_tokens_of_a_namespace(shared_server, root):
    make_namespace(shared_server, root, "tok")
    refused = send(shared_server, root, "POST", "tok/auth/token/create", json={"policies": ["root"]})
    assert refused.status_code == 400
    assert refused.json()["errors"] == ["root tokens may not be created from a parent namespace"]
    ok(
        send(
            shared_server,
            root,
            "PUT",
            "tok/sys/policies/acl/tokens",
            json={"policy": 'path "auth/token/*" { capabilities = ["create", "read", "update", "sudo", "list"] }'},
        ),
        204,
    )
    admin = token_in(shared_server, root, "tok", "tokens")
    # A namespace's token makes tokens in its namespace, of its own policies only.
    child = ok(send(shared_server, admin, "POST", "tok/auth/token/create", json={"policies": ["tokens"]}))["auth"]
    refused = send(shared_server, admin, "POST", "tok/auth/token/create", json={"policies": ["root"]})
    assert refused.status_code == 400
    # Its accessors list holds its namespace's tokens; another namespace's accessor is not found from here.
    accessors = ok(send(shared_server, admin, "LIST", "tok/auth/token/accessors"))["data"]["keys"]
    assert child["accessor"] in accessors and len(accessors) == 2
    root_accessor = ok(send(shared_server, root, "GET", "auth/token/lookup-self"))["data"]["accessor"]
    hidden = send(shared_server, admin, "POST", "tok/auth/token/lookup-accessor", json={"accessor": root_accessor})
    assert hidden.status_code == 400
    ok(send(shared_server, admin, "POST", "tok/auth/token/revoke-accessor", json={"accessor": root_accessor}), 400)
    assert send(shared_server, root, "GET", "auth/token/lookup-self").status_code == 200
    # Deleting the namespace revokes its tokens.
    ok(send(shared_server, root, "DELETE", "sys/namespaces/tok"))
    assert send(shared_server, admin, "GET", "auth/token/lookup-self").status_code == 403


# -- clients ---------------------------------------------------------------------------------------------


def _bao_env(server, token, **extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
    env.update(BAO_ADDR=server.url, BAO_TOKEN=token, HOME=str(Path(server.data_dir)), **extra)
    return env


def test_bao_namespace_commands(shared_server, root):
    bao(shared_server, root, "namespace", "create", "cli")
    bao(shared_server, root, "namespace", "create", "-namespace=cli", "inner")
    listed = json.loads(bao(shared_server, root, "namespace", "list", "-format=json").stdout)
    assert "cli/" in listed
    inner = bao(shared_server, root, "namespace", "list", "-format=json", "-namespace=cli").stdout
    assert json.loads(inner) == ["inner/"]
    looked = bao(shared_server, root, "namespace", "lookup", "-format=json", "-namespace=cli", "inner").stdout
    assert json.loads(looked)["path"] == "cli/inner/"
    bao(shared_server, root, "namespace", "create", "-custom-metadata=a=1", "-custom-metadata=b=2", "meta")
    bao(shared_server, root, "namespace", "patch", "-custom-metadata=c=3", "-remove-custom-metadata=a", "meta")
    patched = bao(shared_server, root, "namespace", "lookup", "-format=json", "meta").stdout
    assert json.loads(patched)["custom_metadata"] == {"b": "2", "c": "3"}
    missing = bao(shared_server, root, "namespace", "patch", "-custom-metadata=c=3", "nowhere", check=False)
    assert missing.returncode != 0
    # BAO_NAMESPACE, as -namespace.
    env = _bao_env(shared_server, root, BAO_NAMESPACE="cli")
    run = subprocess.run(
        [str(BAO), "secrets", "enable", "transit"], env=env, capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    bao(shared_server, root, "write", "-namespace=cli", "-f", "transit/keys/from-cli")
    assert bao_json(shared_server, root, "list", "-namespace=cli", "transit/keys") == ["from-cli"]
    refused = bao(shared_server, root, "namespace", "delete", "-namespace=cli", "missing-one", check=False)
    assert refused.returncode == 0  # OpenBao: deleting what is not there succeeds, with a warning
    bao(shared_server, root, "namespace", "delete", "-namespace=cli", "inner")
    refused = bao(shared_server, root, "namespace", "delete", "cli", check=False)
    assert refused.returncode != 0 and "unable to delete namespace containing mounts" in refused.stderr


def test_hvac_namespace_argument(shared_server, root):
    client = hvac.Client(url=shared_server.url, token=root)
    client.sys.create_namespace(path="hv")
    tenant = hvac.Client(url=shared_server.url, token=root, namespace="hv")
    tenant.sys.create_namespace(path="app")
    assert tenant.sys.list_namespaces()["data"]["keys"] == ["app/"]
    tenant.sys.enable_secrets_engine("transit", path="transit")
    tenant.secrets.transit.create_key("hv-key")
    sealed = tenant.secrets.transit.encrypt_data("hv-key", PLAINTEXT)["data"]["ciphertext"]
    assert tenant.secrets.transit.decrypt_data("hv-key", sealed)["data"]["plaintext"] == PLAINTEXT
    tenant.sys.create_or_update_policy("hv-policy", TRANSIT_ALL)
    member = tenant.auth.token.create(policies=["hv-policy"])["auth"]["client_token"]
    mine = hvac.Client(url=shared_server.url, token=member, namespace="hv")
    assert mine.secrets.transit.read_key("hv-key")["data"]["name"] == "hv-key"
    with pytest.raises(Forbidden):
        hvac.Client(url=shared_server.url, token=member).secrets.transit.read_key("vault-enc")
    with pytest.raises(Forbidden):
        hvac.Client(url=shared_server.url, token=member, namespace="hv/app").sys.list_mounted_secrets_engines()


# -- storage, on both databases --------------------------------------------------------------------------


def test_namespaces_on_both_databases(server):
    root = server.root_token()
    make_namespace(server, root, "db")
    make_namespace(server, root, "db/kid")
    ok(send(server, root, "POST", "db/sys/mounts/transit", json={"type": "transit"}), 204)
    ok(send(server, root, "POST", "db/transit/keys/k"))
    ok(send(server, root, "PUT", "db/sys/policies/acl/p", json={"policy": TRANSIT_ALL}), 204)
    member = token_in(server, root, "db", "p")
    ok(send(server, member, "POST", "db/transit/encrypt/k", json={"plaintext": PLAINTEXT}))
    assert send(server, member, "GET", "transit/keys/vault-enc").status_code == 403
    assert send(server, member, "GET", "db/kid/transit/keys/k").status_code == 403
    assert ok(send(server, root, "LIST", "db/sys/namespaces"))["data"]["keys"] == ["kid/"]
    # A namespace with a child, then with a mount, is refused; empty, it goes with its policies and tokens.
    assert send(server, root, "DELETE", "sys/namespaces/db").status_code == 400
    ok(send(server, root, "DELETE", "db/sys/namespaces/kid"))
    assert send(server, root, "DELETE", "sys/namespaces/db").status_code == 400
    ok(send(server, root, "POST", "db/transit/keys/k/config", json={"deletion_allowed": True}))
    ok(send(server, root, "DELETE", "db/sys/mounts/transit", params={"force": "true"}), 204)
    ok(send(server, root, "DELETE", "sys/namespaces/db"))
    assert send(server, member, "GET", "auth/token/lookup-self").status_code == 403
    # Made again, it is empty: the old policy and mount are gone.
    make_namespace(server, root, "db")
    assert send(server, root, "GET", "db/sys/policies/acl/p").status_code == 404
    assert set(ok(send(server, root, "GET", "db/sys/mounts"))["data"]) == {"sys/"}


# -- parity with OpenBao -----------------------------------------------------------------------------------


def _shape(response):
    """What must agree: the status, the errors' words, the data's field names (not ids, times, tokens)."""
    body = response.json() if response.content else None
    if body is None:
        return response.status_code, None
    if "errors" in body:
        return response.status_code, ("errors", tuple(body["errors"]))
    data = body.get("data")
    return response.status_code, ("data", tuple(sorted(data)) if isinstance(data, dict) else data, body["warnings"])


def _scenario(url, root_token):
    """The same requests to one server; their shapes, and the values that must agree."""

    def call(method, path, namespace=None, token=root_token, headers_extra=None, **kwargs):
        headers = {"X-Vault-Token": token, **(headers_extra or {})}
        if namespace is not None:
            headers["X-Vault-Namespace"] = namespace
        return requests.request(method, f"{url}/v1/{path}", headers=headers, timeout=30, **kwargs)

    seen = []
    created = call("POST", "sys/namespaces/par")
    seen.append(_shape(created))
    meta = call("PUT", "sys/namespaces/par", json={"custom_metadata": {"team": "a"}})
    seen += [_shape(meta), meta.json()["data"]["custom_metadata"], meta.json()["data"]["path"]]
    seen.append(_shape(call("GET", "sys/namespaces/par")))
    merge = {"Content-Type": "application/merge-patch+json"}
    patch = {"custom_metadata": {"team": None, "owner": "b"}}
    patched = call("PATCH", "sys/namespaces/par", json=patch, headers_extra=merge)
    seen += [_shape(patched), patched.json()["data"]["custom_metadata"]]
    seen.append(_shape(call("PATCH", "sys/namespaces/absent", json=patch, headers_extra=merge)))
    kid = call("POST", "par/sys/namespaces/kid")
    seen += [_shape(kid), kid.json()["data"]["path"]]
    header_kid = call("POST", "sys/namespaces/kid2", namespace="par")
    seen.append(header_kid.json()["data"]["path"])
    listed = call("LIST", "sys/namespaces", namespace="par")
    # (OpenBao's order of the keys varies from run to run.)
    seen += [_shape(listed), sorted(listed.json()["data"]["keys"]), sorted(listed.json()["data"]["key_info"]["kid/"])]
    seen.append(listed.json()["data"]["key_info"]["kid/"]["path"])
    for method, path, namespace in (
        ("LIST", "par/kid/sys/namespaces", None),
        ("POST", "sys/namespaces/par/deeper", None),
        ("POST", "sys/namespaces/sys", None),
        ("POST", "sys/namespaces/root", None),
        ("POST", "sys/namespaces/a b", None),
        ("GET", "sys/namespaces/absent", None),
        ("DELETE", "sys/namespaces/absent", None),
        ("DELETE", "sys/namespaces/par", None),
        ("GET", "sys/mounts", "absent"),
        ("GET", "sys/mounts", "par/absent"),
    ):
        seen.append((method, path, namespace, _shape(call(method, path, namespace))))
    # No transit/ in a new namespace (an unknown path: the status agrees, this server's words are its own).
    seen.append(call("GET", "par/transit/keys/none").status_code)

    # Mounts and namespaces over each other.
    call("POST", "sys/mounts/par-mount", json={"type": "transit"})
    seen.append(_shape(call("POST", "sys/namespaces/par-mount")))
    seen.append(_shape(call("POST", "sys/mounts/par/inner", json={"type": "transit"})))

    # Keys, policies and tokens of a namespace.
    seen.append(call("POST", "par/sys/mounts/transit", json={"type": "transit"}).status_code)
    seen.append(call("POST", "transit/keys/k", namespace="par").status_code)
    seen.append(call("PUT", "par/sys/policies/acl/member", json={"policy": TRANSIT_ALL}).status_code)
    seen.append(_shape(call("POST", "par/auth/token/create", json={"policies": ["root"]})))
    member = call("POST", "par/auth/token/create", json={"policies": ["member"]}).json()["auth"]["client_token"]
    looked = call("GET", "par/auth/token/lookup-self", token=member).json()["data"]
    seen.append(looked["namespace_path"])
    call("POST", "par/kid/sys/mounts/transit", json={"type": "transit"})
    call("POST", "par/kid/transit/keys/k")
    call("PUT", "par/kid/sys/policies/acl/member", json={"policy": TRANSIT_ALL})
    kid_member = call("POST", "par/kid/auth/token/create", json={"policies": ["member"]}).json()["auth"]
    seen.append(call("GET", "par/transit/keys/k", token=member).status_code)
    seen.append(call("GET", "transit/keys/k", namespace="par", token=member).status_code)
    seen.append(call("GET", "par/transit/keys/k", token=kid_member["client_token"]).status_code)  # its parent
    seen.append(call("GET", "par/kid/transit/keys/k", token=member).status_code)  # no grant there
    call("PUT", "sys/policies/acl/par-reader", json={"policy": 'path "par/transit/*" { capabilities = ["read"] }'})
    operator = call("POST", "auth/token/create", json={"policies": ["par-reader"]}).json()["auth"]["client_token"]
    seen.append(call("GET", "par/transit/keys/k", token=operator).status_code)
    seen.append(call("GET", "par/kid/transit/keys/k", token=operator).status_code)
    seen.append(call("LIST", "sys/policies/acl", namespace="par").status_code)
    return seen


@pytest.mark.slow
def test_namespaces_as_openbao_answers(shared_server, root):
    from openbao import dev_server

    with dev_server() as url:
        theirs = _scenario(url, "root")
    ours = _scenario(shared_server.url, root)
    assert len(ours) == len(theirs)
    for mine, reference in zip(ours, theirs, strict=True):
        assert mine == reference


# -- the domain's rules ------------------------------------------------------------------------------------


def test_names_and_headers():
    from kms_service.errors import InvalidRequest
    from kms_service.namespaces import MAX_DEPTH, child_path, header_segments

    assert child_path("", "team-a") == "team-a/" and child_path("team-a/", "/app/") == "team-a/app/"
    for bad in ("", "a/b", "..", ".", "sys", "ROOT", "a b", "x" * 65, "tab\there"):
        with pytest.raises(InvalidRequest):
            child_path("", bad)
    with pytest.raises(InvalidRequest):
        child_path("a/" * MAX_DEPTH, "deeper")
    assert header_segments(None) == () and header_segments("") == () and header_segments("/") == ()
    assert header_segments("team-a") == ("team-a",) and header_segments("/team-a/app/") == ("team-a", "app")
    for bad in ("a/../b", "a//b", "./a", "a\x00b", "a b"):
        assert header_segments(bad) is None, bad


def test_another_node_hears_of_a_namespace(start_server):
    """A namespace made or deleted on one node reaches another node on the same database (a mount change)."""
    import time

    first, second = start_server(), start_server()
    root = first.root_token()

    def until(condition, what):
        deadline = time.monotonic() + 10
        while not condition():
            assert time.monotonic() < deadline, what
            time.sleep(0.05)

    make_namespace(first, root, "nodes")
    ok(send(first, root, "POST", "nodes/sys/mounts/transit", json={"type": "transit"}), 204)
    ok(send(first, root, "POST", "nodes/transit/keys/k"))
    until(lambda: send(second, root, "GET", "transit/keys/k", namespace="nodes").status_code == 200, "never seen")
    ok(send(first, root, "POST", "nodes/transit/keys/k/config", json={"deletion_allowed": True}))
    ok(send(first, root, "DELETE", "nodes/sys/mounts/transit", params={"force": "true"}), 204)
    ok(send(first, root, "DELETE", "sys/namespaces/nodes"))
    until(lambda: send(second, root, "GET", "sys/mounts", namespace="nodes").status_code == 404, "never gone")


@pytest.mark.sqlite_only
def test_audit_records_name_the_namespace(start_server, tmp_path):
    log = tmp_path / "audit.log"
    server = start_server(audit_file=log)
    root = server.root_token()
    space = make_namespace(server, root, "audited")
    ok(send(server, root, "POST", "audited/sys/mounts/transit", json={"type": "transit"}), 204)
    ok(send(server, root, "POST", "transit/keys/k", namespace="audited"))
    server.stop()
    records = [json.loads(line) for line in log.read_text().splitlines()]
    key_writes = [r for r in records if r.get("request", {}).get("path", "").endswith("transit/keys/k")]
    assert key_writes and all(r["request"]["namespace"] == {"id": space["id"], "path": "audited/"} for r in key_writes)
    assert all(r["request"]["mount_point"] == "transit/" for r in key_writes)
    creation = [r for r in records if r.get("request", {}).get("path") == "sys/namespaces/audited"]
    assert creation and all(r["request"]["namespace"] == {"id": "root"} for r in creation)
