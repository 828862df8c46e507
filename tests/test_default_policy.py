"""Vault's default policy and policy names on SQLite and PostgreSQL, through OpenBao's CLI, hvac and curl: the
paths it grants are refused to a token made without it, it is shown in lookups, it can be rewritten and not
deleted, tokens made before it existed keep its paths; names are lowercased; capabilities keep a trailing '/'."""

from __future__ import annotations

import json
import subprocess

import hvac
import hvac.exceptions
import pytest
import requests
from baocli import bao
from sqlalchemy import delete

from kms_service.policy_documents import DEFAULT_POLICY
from kms_service.storage import models as m

APP_POLICY = 'path "transit/keys" { capabilities = ["list"] }\npath "transit/encrypt/*" { capabilities = ["update"] }'


@pytest.fixture
def root(server):
    server.call(server.kms.policies.write("app", APP_POLICY))
    return server.root_token()


def _bao_json(server, token, *args):
    return json.loads(bao(server, token, *args[:2], "-format=json", *args[2:]).stdout)


def _self_paths(server, token) -> dict[str, int]:
    """The status of each path the default policy grants, for ``token`` (wrap asks for a wrapped answer)."""
    headers = {"X-Vault-Token": token}
    url = f"{server.url}/v1/"
    wrapping = server.client(server.root_token()).sys.wrap({"a": "b"}, ttl="5m")["wrap_info"]["token"]
    statuses = {
        "lookup-self": requests.get(url + "auth/token/lookup-self", headers=headers, timeout=10).status_code,
        "capabilities-self": requests.post(
            url + "sys/capabilities-self", headers=headers, json={"paths": ["transit/keys"]}, timeout=10
        ).status_code,
        "wrap": requests.post(
            url + "sys/wrapping/wrap", headers={**headers, "X-Vault-Wrap-TTL": "60"}, json={"a": 1}, timeout=10
        ).status_code,
        "lookup": requests.post(
            url + "sys/wrapping/lookup", headers=headers, json={"token": wrapping}, timeout=10
        ).status_code,
        "unwrap": requests.post(
            url + "sys/wrapping/unwrap", headers=headers, json={"token": wrapping}, timeout=10
        ).status_code,
        "renew-self": requests.post(url + "auth/token/renew-self", headers=headers, timeout=10).status_code,
        "revoke-self": requests.post(url + "auth/token/revoke-self", headers=headers, timeout=10).status_code,
    }
    return statuses


ALLOWED = {
    "lookup-self": 200,
    "capabilities-self": 200,
    "wrap": 200,
    "lookup": 200,
    "unwrap": 200,
    "renew-self": 200,
    "revoke-self": 204,
}
# sys/wrapping/lookup needs no token at all (Vault's unauthenticated path): it stays open.
REFUSED = {**dict.fromkeys(ALLOWED, 403), "lookup": 200}


def test_bao_policy_read_default_and_it_cannot_be_deleted(server, root):
    assert bao(server, root, "policy", "read", "default").stdout.strip() == DEFAULT_POLICY.strip()
    assert "default" in bao(server, root, "policy", "list").stdout.split()
    refused = bao(server, root, "policy", "delete", "default", check=False)
    assert refused.returncode != 0 and "cannot delete default policy" in refused.stderr
    for path in ("sys/policies/acl/DEFAULT", "sys/policy/default"):
        response = requests.delete(f"{server.url}/v1/{path}", headers={"X-Vault-Token": root}, timeout=10)
        assert (response.status_code, response.json()) == (400, {"errors": ["cannot delete default policy"]})
    assert bao(server, root, "policy", "read", "default").stdout.strip() == DEFAULT_POLICY.strip()


def test_new_tokens_carry_default_unless_asked_not_to(server, root):
    made = _bao_json(server, root, "token", "create", "-policy=app", "-ttl=1h")["auth"]
    assert made["policies"] == ["app", "default"] and made["token_policies"] == ["app", "default"]
    bare = _bao_json(server, root, "token", "create", "-policy=app", "-no-default-policy", "-ttl=1h")["auth"]
    assert bare["policies"] == ["app"]
    looked = server.client(root).auth.token.lookup(bare["client_token"])["data"]
    assert looked["policies"] == ["app"]
    assert server.client(made["client_token"]).auth.token.lookup_self()["data"]["policies"] == ["app", "default"]
    hvac_made = server.client(root).auth.token.create(policies=["app"], no_default_policy=True, ttl="1h")["auth"]
    assert hvac_made["policies"] == ["app"]
    # A root token is root alone.
    assert server.client(root).auth.token.create(policies=["root", "app"])["auth"]["policies"] == ["root"]

    assert _self_paths(server, made["client_token"]) == ALLOWED
    assert _self_paths(server, bare["client_token"]) == REFUSED
    # The token that may not revoke itself is still alive.
    assert server.client(root).auth.token.lookup(bare["client_token"])["data"]["accessor"] == bare["accessor"]


def test_a_parent_without_default_does_not_hand_it_down(server, root):
    server.call(server.kms.policies.write("creator", 'path "auth/token/create" { capabilities = ["update"] }'))
    parent = server.client(root).auth.token.create(policies=["app", "creator"], no_default_policy=True)["auth"]
    as_parent = server.client(parent["client_token"])
    assert as_parent.auth.token.create(policies=["app"])["auth"]["policies"] == ["app"]
    with pytest.raises(hvac.exceptions.InvalidRequest, match="subset"):
        as_parent.auth.token.create(policies=["app", "default"])


def test_the_default_policy_can_be_rewritten(server, root, tmp_path):
    token = server.client(root).auth.token.create(policies=["app"], ttl="1h")["auth"]["client_token"]
    assert server.client(token).auth.token.lookup_self()["data"]["policies"] == ["app", "default"]
    narrower = 'path "auth/token/lookup-self" { capabilities = ["read"] }'
    (tmp_path / "default.hcl").write_text(narrower)
    bao(server, root, "policy", "write", "default", str(tmp_path / "default.hcl"))
    assert bao(server, root, "policy", "read", "default").stdout.strip() == narrower
    assert server.client(token).auth.token.lookup_self()["data"]["policies"] == ["app", "default"]
    with pytest.raises(hvac.exceptions.Forbidden):
        server.client(token).sys.get_capabilities(["transit/keys"])


def test_endpoint_tokens_carry_default(server):
    token = server.endpoint_token("crypto")
    me = server.client(token).auth.token.lookup_self()["data"]
    assert "default" in me["policies"] and len(me["policies"]) > 1
    caps = subprocess.run(
        [
            "curl",
            "-s",
            "-H",
            f"X-Vault-Token: {token}",
            "-d",
            json.dumps({"paths": ["sys/wrapping/wrap"]}),
            f"{server.url}/v1/sys/capabilities-self",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(caps.stdout)["capabilities"] == ["update"]


def test_tokens_made_before_the_default_policy_keep_its_paths(server, root):
    """A database from before: no default policy stored, tokens without it. The next start gives it to them
    (root tokens and tokens that have it excepted), and they keep the paths they could use."""
    old = server.client(root).auth.token.create(policies=["app"], no_default_policy=True, ttl="1h")["auth"]
    old_root = server.root_token()

    async def as_before() -> None:
        async with server.kms.db.writing() as session:
            await session.execute(delete(m.Policy).where(m.Policy.name == "default"))
            await session.execute(delete(m.TokenPolicy).where(m.TokenPolicy.policy == "default"))

    server.call(as_before())
    server.call(server.kms.tokens.stop_refreshing())
    assert _self_paths(server, old["client_token"])["lookup-self"] == 403
    server.call(server.kms.policies.ensure_default())
    server.call(server.kms.policies.ensure_default())  # once only
    assert server.client(root).auth.token.lookup(old["client_token"])["data"]["policies"] == ["app", "default"]
    assert server.client(root).auth.token.lookup(old_root)["data"]["policies"] == ["root"]
    assert _self_paths(server, old["client_token"]) == ALLOWED
    # From now on, no_default_policy is kept.
    bare = server.client(root).auth.token.create(policies=["app"], no_default_policy=True, ttl="1h")["auth"]
    server.call(server.kms.policies.ensure_default())
    assert server.client(root).auth.token.lookup(bare["client_token"])["data"]["policies"] == ["app"]


def test_policy_names_are_lowercased(server, root):
    client = server.client(root)
    client.sys.create_or_update_acl_policy("Team-A", 'path "transit/keys" { capabilities = ["list"] }')
    assert "team-a" in client.sys.list_acl_policies()["data"]["keys"]
    assert "Team-A" not in client.sys.list_acl_policies()["data"]["keys"]
    assert client.sys.read_acl_policy("TEAM-A")["data"]["name"] == "team-a"
    token = client.auth.token.create(policies=["TEAM-a"], ttl="1h")["auth"]
    assert token["policies"] == ["default", "team-a"]
    assert bao(server, token["client_token"], "token", "capabilities", "transit/keys").stdout.strip() == "list"
    client.sys.delete_acl_policy("Team-A")
    with pytest.raises(hvac.exceptions.InvalidPath):
        client.sys.read_acl_policy("team-a")


def test_capabilities_keep_a_trailing_slash(server, root):
    server.call(server.kms.policies.write("lister", 'path "transit/keys/" { capabilities = ["list"] }'))
    token = server.client(root).auth.token.create(policies=["lister", "app"], ttl="1h")["auth"]["client_token"]
    answer = server.client(token).sys.get_capabilities(["transit/keys/", "/transit/keys", "transit/other/"])
    assert answer["transit/keys/"] == ["list"]
    assert answer["/transit/keys"] == ["list"]  # the rule for transit/keys (APP_POLICY)
    assert answer["transit/other/"] == ["deny"]
    assert "capabilities" not in answer  # Vault's older field is for one path only
    assert bao(server, root, "token", "capabilities", token, "transit/keys/").stdout.strip() == "list"
    one = server.client(root).sys.get_capabilities(["transit/keys/"], token=token)
    assert one["capabilities"] == one["transit/keys/"] == ["list"]
