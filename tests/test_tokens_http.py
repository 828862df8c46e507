"""Tokens over HTTP (Vault's auth/token/*): OpenBao's CLI and hvac's auth.token methods on SQLite and
PostgreSQL, Vault's rules against privilege escalation, child revocation, limited uses, and the shape of
OpenBao's answers."""

from __future__ import annotations

import json
from datetime import timedelta

import hvac
import hvac.exceptions
import pytest
import requests
from baocli import bao
from test_openbao_parity import openbao  # noqa: F401 (a fixture)

APP_POLICY = """
path "transit/encrypt/*" {
  capabilities = ["update"]
}
"""
CREATOR_POLICY = """
path "auth/token/create" {
  capabilities = ["update"]
}
path "auth/token/lookup-accessor" {
  capabilities = ["update"]
}
"""


@pytest.fixture
def root(server):
    server.call(server.kms.policies.write("app", APP_POLICY))
    server.call(server.kms.policies.write("creator", CREATOR_POLICY))
    return server.root_token()


def _token(server, policies, ttl=timedelta(hours=1)):
    return server.call(server.kms.tokens.create(policies, ttl))[0]


def bao_json(server, token, command, subcommand, *args):
    return json.loads(bao(server, token, command, subcommand, "-format=json", *args).stdout)


def _alive(server, token) -> bool:
    return requests.get(f"{server.url}/v1/auth/token/lookup-self", headers={"X-Vault-Token": token}, timeout=10).ok


def test_bao_token_commands(server, root):
    reply = bao_json(server, root, "token", "create", "-policy=app", "-ttl=30d")
    assert reply["warnings"] is None, reply["warnings"]  # every field bao sends is known
    created = reply["auth"]
    token, accessor = created["client_token"], created["accessor"]
    # Every token but root carries the default policy (docs/policies.md).
    assert created["policies"] == ["app", "default"] and created["token_policies"] == ["app", "default"]
    assert 30 * 86400 - 60 < created["lease_duration"] <= 30 * 86400
    assert created["renewable"] is True and created["orphan"] is False
    looked = bao_json(server, root, "token", "lookup", "-accessor", accessor)["data"]
    assert looked["accessor"] == accessor and looked["id"] == "" and looked["policies"] == ["app", "default"]
    assert looked["creation_ttl"] == 30 * 86400 and looked["orphan"] is False
    assert bao_json(server, root, "token", "lookup", token)["data"]["id"] == token
    caps = bao(server, root, "token", "capabilities", token, "transit/encrypt/vault-enc").stdout
    assert caps.strip() == "update"
    renewed = bao_json(server, root, "token", "renew", "-increment=1h", token)["auth"]
    assert 3500 < renewed["lease_duration"] <= 3600
    assert 3500 < bao_json(server, token, "token", "lookup")["data"]["ttl"] <= 3600
    bao(server, root, "token", "revoke", "-accessor", accessor)
    assert not _alive(server, token)
    assert bao(server, root, "token", "lookup", "-accessor", accessor, check=False).returncode != 0


def test_hvac_auth_token_methods(server, root):
    client = server.client(root)
    auth = client.auth.token.create(policies=["app"], ttl="1.5h", meta={"team": "payments"}, display_name="ci")
    auth = auth["auth"]
    token, accessor = auth["client_token"], auth["accessor"]
    assert auth["metadata"] == {"team": "payments"} and auth["lease_duration"] == 5400
    data = client.auth.token.lookup(token)["data"]
    assert data["id"] == token and data["display_name"] == "token-ci" and data["meta"] == {"team": "payments"}
    assert data["creation_ttl"] == 5400 and data["renewable"] is True and data["num_uses"] == 0
    assert client.auth.token.lookup_accessor(accessor)["data"]["accessor"] == accessor
    mine = server.client(token)
    assert mine.auth.token.lookup_self()["data"]["accessor"] == accessor
    assert mine.auth.token.renew_self(increment="90m")["auth"]["lease_duration"] == 5400
    assert client.auth.token.renew(token, increment=600)["auth"]["lease_duration"] <= 600
    assert accessor in client.auth.token.list_accessors()["data"]["keys"]
    client.auth.token.revoke(token)
    assert not _alive(server, token)
    second = client.auth.token.create(policies=["app"], ttl="90m")["auth"]
    client.auth.token.revoke_accessor(second["accessor"])
    assert not _alive(server, second["client_token"])
    third = client.auth.token.create(policies=["app"], ttl=3600)["auth"]["client_token"]
    server.client(third).auth.token.revoke_self()
    assert not _alive(server, third)
    orphan = client.auth.token.create_orphan(policies=["app"], ttl="1h")["auth"]
    assert orphan["orphan"] is True


def test_create_respects_explicit_max_ttl_and_renewable(server, root):
    client = server.client(root)
    auth = client.auth.token.create(policies=["app"], ttl="1h", explicit_max_ttl="2h")["auth"]
    renewed = client.auth.token.renew(auth["client_token"], increment="10h")["auth"]
    assert 7100 < renewed["lease_duration"] <= 7200
    fixed = client.auth.token.create(policies=["app"], ttl="1h", renewable=False)["auth"]
    assert fixed["renewable"] is False
    with pytest.raises(hvac.exceptions.InvalidRequest, match="not renewable"):
        client.auth.token.renew(fixed["client_token"])


def test_unknown_policy_is_a_warning_over_http(server, root):
    reply = server.client(root).auth.token.create(policies=["no-such-policy"], ttl="1h")
    assert reply["auth"]["policies"] == ["default", "no-such-policy"]
    assert any("no-such-policy" in warning for warning in reply["warnings"])


def test_privilege_escalation_is_refused(server, root):
    creator = server.client(_token(server, ["app", "creator"], timedelta(hours=1)))
    with pytest.raises(hvac.exceptions.InvalidRequest, match="subset"):
        creator.auth.token.create(policies=["root"])
    with pytest.raises(hvac.exceptions.InvalidRequest, match="subset"):
        creator.auth.token.create(policies=["app", "other"], ttl="10m")
    with pytest.raises(hvac.exceptions.InvalidRequest, match="TTL"):
        creator.auth.token.create(policies=["app"], ttl="2h")
    with pytest.raises(hvac.exceptions.InvalidRequest, match="sudo"):
        creator.auth.token.create(policies=["app"], no_parent=True)
    with pytest.raises(hvac.exceptions.Forbidden):
        creator.auth.token.create_orphan(policies=["app"])
    # What it may do: a subset of its policies, for at most its own remaining life.
    child = creator.auth.token.create(policies=["app"], ttl="30m")["auth"]
    assert child["policies"] == ["app", "default"] and child["orphan"] is False
    inherited = creator.auth.token.create()["auth"]
    assert inherited["policies"] == ["app", "creator", "default"] and inherited["lease_duration"] <= 3600
    # ACL: the non-self paths need a grant.
    app = server.client(_token(server, ["app"]))
    with pytest.raises(hvac.exceptions.Forbidden):
        app.auth.token.create(policies=["app"])
    with pytest.raises(hvac.exceptions.Forbidden):
        app.auth.token.lookup_accessor(child["accessor"])
    assert app.auth.token.lookup_self()["data"]["policies"] == ["app", "default"]


def test_revoking_a_token_revokes_its_children_not_orphans(server, root):
    client = server.client(root)
    parent = client.auth.token.create(policies=["app", "creator"], ttl="1h")["auth"]
    as_parent = server.client(parent["client_token"])
    child = as_parent.auth.token.create(policies=["app", "creator"], ttl="30m")["auth"]
    grandchild = server.client(child["client_token"]).auth.token.create(policies=["app"], ttl="10m")["auth"]
    orphan = client.auth.token.create_orphan(policies=["app"], ttl="1h")["auth"]
    assert client.auth.token.lookup_accessor(child["accessor"])["data"]["orphan"] is False
    for token in (parent, child, grandchild, orphan):
        assert _alive(server, token["client_token"])
    client.auth.token.revoke_accessor(parent["accessor"])
    for token in (parent, child, grandchild):
        assert not _alive(server, token["client_token"])
    assert _alive(server, orphan["client_token"])


def test_num_uses_runs_out(server, root):
    auth = server.client(root).auth.token.create(policies=["app"], ttl="1h", num_uses=3)["auth"]
    assert auth["num_uses"] == 3
    limited = server.client(auth["client_token"])
    assert limited.auth.token.lookup_self()["data"]["num_uses"] == 2
    assert limited.auth.token.lookup_self()["data"]["num_uses"] == 1
    assert limited.auth.token.lookup_self()["data"]["num_uses"] == 0
    with pytest.raises(hvac.exceptions.Forbidden):
        limited.auth.token.lookup_self()
    with pytest.raises(hvac.exceptions.InvalidRequest):
        server.client(root).auth.token.lookup_accessor(auth["accessor"])


def test_endpoint_tokens_stay_managed_by_relationships(server, root):
    endpoint_token = server.endpoint_token("crypto")
    me = server.client(endpoint_token).auth.token.lookup_self()["data"]
    assert me["renewable"] is False and me["orphan"] is True
    with pytest.raises(hvac.exceptions.InvalidRequest, match="not renewable"):
        server.client(root).auth.token.renew(endpoint_token)
    assert server.endpoint_token("crypto") == endpoint_token


def _types(value):
    if isinstance(value, dict):
        return {key: _types(item) for key, item in value.items()}
    return type(value).__name__


def test_openbao_parity_of_create_and_lookup(server, root, openbao):  # noqa: F811
    theirs_client = hvac.Client(url=openbao, token="root")
    theirs_client.sys.create_or_update_policy("app", APP_POLICY)
    ours_client = server.client(root)
    options = {"policies": ["app"], "ttl": "1h", "meta": {"a": "b"}}
    ours = ours_client.auth.token.create(**options)
    theirs = theirs_client.auth.token.create(**options)
    assert ours["data"] is None and theirs["data"] is None
    their_auth = {k: v for k, v in theirs["auth"].items() if k != "identity_policies"}
    # OpenBao adds its "default" policy; the field names and types are what clients read.
    assert _types(ours["auth"]) == _types(their_auth)
    ours_data = ours_client.auth.token.lookup(ours["auth"]["client_token"])["data"]
    theirs_data = theirs_client.auth.token.lookup(theirs["auth"]["client_token"])["data"]
    shared = {k for k in theirs_data if k not in ("last_renewal", "last_renewal_time", "identity_policies")}
    assert set(ours_data) >= shared
    assert {k: _types(ours_data[k]) for k in shared} == {k: _types(theirs_data[k]) for k in shared}
    print(json.dumps({"ours": sorted(ours_data), "theirs": sorted(theirs_data)}))


def test_operator_revoke_takes_the_children_too(server, root):
    client = server.client(root)
    parent = client.auth.token.create(policies=["app", "creator"], ttl="1h")["auth"]
    child = server.client(parent["client_token"]).auth.token.create(policies=["app"], ttl="10m")["auth"]
    assert server.call(server.kms.tokens.revoke(parent["accessor"])) is True
    assert not _alive(server, child["client_token"])


def test_listing_accessors_needs_sudo(server, root):
    lister = """
path "auth/token/accessors/" {
  capabilities = ["list"]
}
"""
    server.call(server.kms.policies.write("lister", lister))
    server.call(server.kms.policies.write("lister-sudo", lister.replace('"list"', '"list", "sudo"')))
    with pytest.raises(hvac.exceptions.Forbidden):
        server.client(_token(server, ["lister"])).auth.token.list_accessors()
    keys = server.client(_token(server, ["lister-sudo"])).auth.token.list_accessors()["data"]["keys"]
    assert len(keys) >= 2
