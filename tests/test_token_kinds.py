"""Vault's token kinds and rules over HTTP, on SQLite and PostgreSQL: the 768h default TTL, periodic and batch
tokens, token roles (and no escalation through them), tokens with limited uses making none, renewals capped at
creation + the maximum TTL with Vault's warning, display names cleaned; each compared with OpenBao's answer."""

from __future__ import annotations

import json
import subprocess
import time

import hvac
import hvac.exceptions
import pytest
import requests
from baocli import bao
from processes import cli_env, run_cli
from test_openbao_parity import openbao  # noqa: F401 (a fixture)
from test_tokens_http import APP_POLICY, CREATOR_POLICY, _alive, _token, bao_json

from kms_service.storage import repository as repo

ROLE_USER_POLICY = """
path "auth/token/create/*" {
  capabilities = ["update"]
}
path "auth/token/create" {
  capabilities = ["update"]
}
"""
DEFAULT_TTL = 768 * 3600


@pytest.fixture
def root(server):
    server.call(server.kms.policies.write("app", APP_POLICY))
    server.call(server.kms.policies.write("creator", CREATOR_POLICY))
    return server.root_token()


def _post(url, token, path, body=None):
    return requests.post(f"{url}/v1/{path}", headers={"X-Vault-Token": token}, json=body or {}, timeout=10)


def _granted(policies: list[str]) -> list[str]:
    """A token's policies but Vault's "default", which every token may carry besides what it was given."""
    return [name for name in policies if name != "default"]


def _stored_tokens(server) -> int:
    async def count():
        async with server.kms.db.reading() as session:
            return await repo.count_tokens(session)

    return server.call(count())


def test_a_token_without_a_ttl_lives_768h(server, root):
    auth = server.client(root).auth.token.create(policies=["app"])["auth"]
    assert DEFAULT_TTL - 60 < auth["lease_duration"] <= DEFAULT_TTL
    created = bao_json(server, root, "token", "create", "-policy=app")["auth"]
    assert DEFAULT_TTL - 60 < created["lease_duration"] <= DEFAULT_TTL


def test_a_token_without_a_ttl_follows_default_token_ttl(start_server):
    server = start_server(default_token_ttl=600)
    auth = server.client(server.root_token()).auth.token.create(policies=["encrypt:vault-enc"])["auth"]
    assert 540 < auth["lease_duration"] <= 600


def test_periodic_tokens(server, root):
    created = bao_json(server, root, "token", "create", "-policy=app", "-period=1h", "-ttl=5m")["auth"]
    token = created["client_token"]
    assert 3500 < created["lease_duration"] <= 3600 and created["renewable"] is True
    looked = server.client(root).auth.token.lookup(token)["data"]
    assert looked["period"] == 3600 and looked["type"] == "service"
    # Each renewal gives the period again, whatever the increment; no cap, no warning.
    renewed = bao_json(server, root, "token", "renew", "-increment=10h", token)
    assert 3500 < renewed["auth"]["lease_duration"] <= 3600 and renewed["warnings"] is None
    # Asking for a period directly needs root or sudo (a role may grant one).
    creator = server.client(_token(server, ["app", "creator"]))
    with pytest.raises(hvac.exceptions.InvalidRequest, match="root or sudo privileges required to create periodic"):
        creator.auth.token.create(policies=["app"], period="1h")


def test_batch_tokens_are_stored_nowhere(server, root, start_server):
    parent = server.client(root).auth.token.create(policies=["app", "creator"], ttl="1h")["auth"]
    before = _stored_tokens(server)
    reply = bao_json(server, parent["client_token"], "token", "create", "-type=batch", "-policy=app", "-ttl=30m")
    batch = reply["auth"]
    token = batch["client_token"]
    assert token.startswith("kmsb.") and batch["accessor"] == ""
    assert batch["renewable"] is False and batch["orphan"] is False
    assert _stored_tokens(server) == before
    me = server.client(token).auth.token.lookup_self()["data"]
    assert me["type"] == "batch" and _granted(me["policies"]) == ["app"] and me["accessor"] == "" and me["id"] == token
    # Another node of the same database takes it.
    other = start_server()
    assert other.client(token).auth.token.lookup_self()["data"]["type"] == "batch"
    answers = {
        "renew": _post(server.url, root, "auth/token/renew", {"token": token}),
        "renew-self": _post(server.url, token, "auth/token/renew-self"),
        "revoke": _post(server.url, root, "auth/token/revoke", {"token": token}),
        "revoke-self": _post(server.url, token, "auth/token/revoke-self"),
    }
    assert {k: (a.status_code, a.json()["errors"]) for k, a in answers.items()} == {
        "renew": (400, ["batch tokens cannot be renewed"]),
        "renew-self": (400, ["batch tokens cannot be renewed"]),
        "revoke": (400, ["batch tokens cannot be revoked"]),
        "revoke-self": (400, ["batch tokens cannot be revoked"]),
    }
    # Tampered with: not a token.
    forged = token[:-6] + ("AAAAAA" if not token.endswith("AAAAAA") else "BBBBBB")
    assert not _alive(server, forged)
    # Its parent's revocation takes it, on every node.
    server.client(root).auth.token.revoke_accessor(parent["accessor"])
    assert not _alive(server, token)
    deadline = time.monotonic() + 30  # the other node hears of it through the cluster's change feed
    while _alive(other, token):
        assert time.monotonic() < deadline, "the other node still takes a batch token whose parent is revoked"
        time.sleep(0.05)


def test_batch_tokens_make_no_tokens(server, root):
    batch = server.client(root).auth.token.create(policies=["app", "creator"], type="batch")["auth"]
    answer = _post(server.url, batch["client_token"], "auth/token/create", {"policies": ["app"]})
    assert (answer.status_code, answer.json()["errors"]) == (400, ["batch tokens cannot create more tokens"])


def test_tokens_with_limited_uses_make_no_tokens(server, root):
    limited = server.client(root).auth.token.create(policies=["app", "creator"], ttl="1h", num_uses=5)["auth"]
    for body in ({"policies": ["app"]}, {"policies": ["app"], "no_parent": True}):
        answer = _post(server.url, limited["client_token"], "auth/token/create", body)
        assert (answer.status_code, answer.json()["errors"]) == (
            400,
            ["restricted use token cannot generate child tokens"],
        )
    root_limited = server.client(root).auth.token.create(policies=["root"], ttl="1h", num_uses=5)["auth"]
    answer = _post(server.url, root_limited["client_token"], "auth/token/create-orphan", {"policies": ["app"]})
    assert answer.json()["errors"] == ["restricted use token cannot generate child tokens"]


def test_renewals_end_at_creation_plus_the_maximum_ttl(server, root):
    client = server.client(root)
    auth = client.auth.token.create(policies=["app"], ttl="1h", explicit_max_ttl="2h")["auth"]
    renewed = client.auth.token.renew(auth["client_token"], increment="10h")
    assert 7100 < renewed["auth"]["lease_duration"] <= 7200
    (warning,) = renewed["warnings"]
    assert warning.startswith('TTL of "10h" exceeded the effective max_ttl of "1h59m5') or warning.startswith(
        'TTL of "10h" exceeded the effective max_ttl of "2h"'
    )
    assert warning.endswith("; TTL value is capped accordingly")


def test_renewals_end_at_the_servers_maximum_ttl(start_server):
    server = start_server(max_token_ttl=3600)
    client = server.client(server.root_token())
    token = client.auth.token.create(policies=["encrypt:vault-enc"], ttl="30m")["auth"]["client_token"]
    renewed = client.auth.token.renew(token, increment="2h")
    assert 3500 < renewed["auth"]["lease_duration"] <= 3600
    assert "exceeded the effective max_ttl" in renewed["warnings"][0]


def test_display_names_are_cleaned(server, root):
    raw = "Hi\x1b[31m Fake\nLine/\u00fc.x-"
    auth = server.client(root).auth.token.create(policies=["app"], display_name=raw)["auth"]
    looked = server.client(root).auth.token.lookup(auth["client_token"])["data"]
    assert looked["display_name"] == "token-Hi--31m-Fake-Line---x"


def test_display_names_are_cleaned_on_the_command_line(server, root):
    env = cli_env(server.database_url, server.data_dir)
    result = run_cli(
        ["token", "create", "--policy", "root", "--ttl", "1h", "--display-name", "ops\x1b[2J\nfake: line"], env
    )
    assert "\x1b" not in result.stdout
    info = server.call(server.kms.tokens.find(token=result.stdout.splitlines()[-1]))
    assert info.display_name == "ops--2J-fake--line"


def test_token_roles(server, root, start_server):
    client = server.client(root)
    url = server.url
    curl = ["curl", "-sS", "-H", f"X-Vault-Token: {root}"]
    role = {"allowed_policies": ["app", "other"], "disallowed_policies": ["root"], "period": "1h", "orphan": True}
    written = subprocess.run(
        [*curl, "-X", "POST", "--data", json.dumps(role), f"{url}/v1/auth/token/roles/ci"], capture_output=True
    )
    assert written.stdout == b"", written.stdout
    read = subprocess.run([*curl, f"{url}/v1/auth/token/roles/ci"], check=True, capture_output=True).stdout
    data = json.loads(read).get("data")
    assert data is not None, read
    assert data["allowed_policies"] == ["app", "other"] and data["disallowed_policies"] == ["root"]
    assert data["token_period"] == 3600 and data["period"] == 3600 and data["orphan"] is True
    assert data["token_type"] == "default-service" and data["renewable"] is True
    listed = json.loads(subprocess.run([*curl, "-X", "LIST", f"{url}/v1/auth/token/roles"], capture_output=True).stdout)
    assert listed["data"]["keys"] == ["ci"]
    # A caller allowed to create through the role gets what the role allows, without sudo.
    server.call(server.kms.policies.write("role-user", ROLE_USER_POLICY))
    user = _token(server, ["role-user"])
    created = bao_json(server, user, "token", "create", "-role=ci", "-policy=app")["auth"]
    assert _granted(created["policies"]) == ["app"] and created["orphan"] is True
    assert client.auth.token.lookup(created["client_token"])["data"]["period"] == 3600
    # Escalation through the role: refused.
    for body, words in (
        ({"policies": ["root"]}, "must be subset of the role's allowed policies"),
        ({"policies": ["app", "creator"]}, "must be subset of the role's allowed policies"),
    ):
        answer = _post(url, user, "auth/token/create/ci", body)
        assert answer.status_code == 400 and words in answer.json()["errors"][0], answer.text
    _post(url, root, "auth/token/roles/open", {"orphan": False})  # no allowed_policies: the caller's own
    answer = _post(url, user, "auth/token/create/open", {"policies": ["app"]})
    assert answer.json()["errors"] == ["child policies must be subset of parent"]
    _post(url, root, "auth/token/roles/rooted", {"allowed_policies": ["root"]})
    answer = _post(url, user, "auth/token/create/rooted", {"policies": ["root"]})
    assert answer.json()["errors"] == ["root tokens may not be created without parent token being root"]
    answer = _post(url, user, "auth/token/create/nope", {})
    assert (answer.status_code, answer.json()["errors"]) == (400, ["unknown role nope"])
    # Batch roles.
    _post(url, root, "auth/token/roles/batch", {"allowed_policies": ["app"], "token_type": "batch", "renewable": False})
    batch = _post(url, root, "auth/token/create/batch").json()["auth"]
    assert batch["token_type"] == "batch" and batch["client_token"].startswith("kmsb.")
    answer = _post(url, root, "auth/token/roles/bad", {"token_type": "bogus"})
    assert answer.json()["errors"] == ["invalid 'token_type' value \"bogus\""]
    subprocess.run([*curl, "-X", "DELETE", f"{url}/v1/auth/token/roles/ci"], check=True)
    assert requests.get(f"{url}/v1/auth/token/roles/ci", headers={"X-Vault-Token": root}, timeout=10).status_code == 404
    # What bao write sends (names separated by commas), read back by another node of the same database.
    bao(server, root, "write", "auth/token/roles/from-cli", "allowed_policies=app, Other", "token_type=default-batch")
    other = start_server()
    shown = bao_json(other, root, "read", "auth/token/roles/from-cli")["data"]
    assert shown["allowed_policies"] == ["app", "other"] and shown["token_type"] == "default-batch"
    assert other.client(root).auth.token.create(policies=["app"], role_name="from-cli")["auth"]["token_type"] == "batch"
    # Writing a role needs its grant.
    assert _post(url, user, "auth/token/roles/mine", {"allowed_policies": ["root"]}).status_code == 403


# -- the same requests to OpenBao ------------------------------------------------------------------------------


def _without_default(errors: list[str]) -> list[str]:
    """OpenBao attaches its "default" policy; the words are compared without it."""
    return [e.replace('"default" ', "").replace(' "default"', "") for e in errors]


def _answer(url, token, path, body):
    reply = _post(url, token, path, body)
    payload = reply.json() if reply.content else {}
    return reply.status_code, _without_default(payload.get("errors") or []), payload


def test_openbao_parity_of_token_kinds(server, root, openbao):  # noqa: F811
    ours_url, theirs_url = server.url, openbao
    for url, token in ((ours_url, root), (theirs_url, "root")):
        _post(url, token, "sys/policy/creator", {"policy": 'path "auth/token/*" { capabilities = ["update"] }'})
        _post(url, token, "auth/token/roles/r1", {"allowed_policies": ["a", "b"], "period": "1h"})
        _post(url, token, "auth/token/roles/r2", {"token_type": "batch"})
        _post(url, token, "auth/token/roles/r4", {"allowed_policies": "creator, X", "token_type": "default-batch"})
        _post(url, token, "auth/token/roles/r5", {"allowed_policies": ["creator"]})

    def both(make_token, path, body):
        return [
            _answer(url, make_token(url, token), path, body) for url, token in ((ours_url, root), (theirs_url, "root"))
        ]

    def as_root(_url, token):
        return token

    def child(**body):
        def make(url, token):
            return _post(url, token, "auth/token/create", {"policies": ["creator"], **body}).json()["auth"][
                "client_token"
            ]

        return make

    cases = [
        (child(num_uses=3), "auth/token/create", {"policies": ["creator"]}),
        (child(num_uses=3), "auth/token/create-orphan", {"policies": ["creator"]}),
        (child(type="batch"), "auth/token/create", {"policies": ["creator"]}),
        (child(type="batch"), "auth/token/renew-self", {}),
        (child(type="batch"), "auth/token/revoke-self", {}),
        (as_root, "auth/token/create", {"type": "batch", "policies": ["root"]}),
        (as_root, "auth/token/create", {"type": "batch", "policies": ["x"], "period": "1h"}),
        (as_root, "auth/token/create", {"type": "batch", "policies": ["x"], "num_uses": 2}),
        (as_root, "auth/token/create", {"type": "batch", "policies": ["x"], "explicit_max_ttl": "1h"}),
        (as_root, "auth/token/create", {"type": "nope", "policies": ["x"]}),
        (as_root, "auth/token/create/nope", {}),
        (as_root, "auth/token/create/r1", {"policies": ["z"]}),
        (as_root, "auth/token/create/r2", {"policies": ["x"]}),
        (child(), "auth/token/create", {"policies": ["creator"], "period": "1h"}),
        (as_root, "auth/token/roles/r3", {"token_type": "bogus"}),
        (child(), "auth/token/create/r5", {"period": "1h"}),
    ]
    for make_token, path, body in cases:
        ours, theirs = both(make_token, path, body)
        assert ours[:2] == theirs[:2], (path, body, ours, theirs)
    # What succeeds: the same fields and values where they do not depend on the server.
    for make_token, path, body in (
        (as_root, "auth/token/create", {"policies": ["x"], "period": "1h", "ttl": "5m"}),
        (as_root, "auth/token/create", {"policies": ["x"], "type": "batch"}),
        (as_root, "auth/token/create", {"policies": ["x"]}),
        (as_root, "auth/token/create/r4", {"policies": ["creator"]}),
        (child(), "auth/token/create/r5", {"no_parent": True}),
    ):
        ours, theirs = both(make_token, path, body)
        assert ours[0] == theirs[0] == 200, (path, body, ours, theirs)
        for field in ("renewable", "token_type", "orphan"):
            assert ours[2]["auth"][field] == theirs[2]["auth"][field], (path, body, field)
        # Here a child never outlives its parent (whose 768h began a moment ago); OpenBao's may.
        assert abs(ours[2]["auth"]["lease_duration"] - theirs[2]["auth"]["lease_duration"]) <= 5, (path, body)
    roles = [
        requests.get(f"{url}/v1/auth/token/roles/r4", headers={"X-Vault-Token": t}, timeout=10).json()["data"]
        for url, t in ((ours_url, root), (theirs_url, "root"))
    ]
    assert roles[0] == roles[1]
    # Lookups of periodic and batch tokens: the same fields, of the same types, and the same values where
    # they do not depend on the server.
    for body in ({"policies": ["x"], "period": "1h"}, {"policies": ["x"], "type": "batch", "ttl": "1h"}):
        looked = []
        for url, token in ((ours_url, root), (theirs_url, "root")):
            made = _post(url, token, "auth/token/create", body).json()["auth"]["client_token"]
            looked.append(_post(url, token, "auth/token/lookup", {"token": made}).json()["data"])
        ours_data, theirs_data = looked
        assert set(ours_data) == set(theirs_data), (body, sorted(ours_data), sorted(theirs_data))
        assert {k: type(v) for k, v in ours_data.items()} == {k: type(v) for k, v in theirs_data.items()}, body
        for field in ("creation_ttl", "explicit_max_ttl", "num_uses", "orphan", "renewable", "type", "period"):
            assert ours_data.get(field) == theirs_data.get(field), (body, field)
    # Display names, renew warnings.
    raw = "Hi\x1b[31m Fake\nLine/\u00fc.x-"
    names = []
    for url, token in ((ours_url, root), (theirs_url, "root")):
        made = _post(url, token, "auth/token/create", {"policies": ["x"], "display_name": raw}).json()["auth"]
        looked = _post(url, token, "auth/token/lookup-accessor", {"accessor": made["accessor"]}).json()["data"]
        names.append(looked["display_name"])
    assert names[0] == names[1]
    warnings = []
    for url, token in ((ours_url, root), (theirs_url, "root")):
        made = _post(url, token, "auth/token/create", {"policies": ["x"], "ttl": "10000h"}).json()
        warnings.append([w for w in made["warnings"] if "max_ttl" in w])
        made = _post(url, token, "auth/token/create", {"policies": ["x"], "period": "10000h"}).json()
        warnings.append([w for w in made["warnings"] if "max_ttl" in w])
    our_max = '"8760h"'  # this server's --max-token-ttl (one year) against OpenBao's 768h mount maximum
    assert [[w.replace(our_max, '"768h"') for w in ws] for ws in warnings[:2]] == warnings[2:]


def test_bad_input_is_a_clear_4xx_and_changes_nothing(server, root):
    url = server.url
    before = _stored_tokens(server)
    cases = [
        ("auth/token/roles/-bad", {}),
        ("auth/token/roles/" + "r" * 129, {}),
        ("auth/token/roles/ok", {"allowed_policies": 5}),
        ("auth/token/roles/ok", {"allowed_policies": [1, 2]}),
        ("auth/token/roles/ok", {"token_period": "soon"}),
        ("auth/token/roles/ok", {"orphan": "maybe"}),
        ("auth/token/roles/ok", {"token_type": "x" * 10_000}),
        ("auth/token/create", {"period": "-1h"}),
        ("auth/token/create", {"type": ["batch"]}),
        ("auth/token/create", {"type": "batch", "meta": {f"k{i}": "v" * 200 for i in range(40)}}),
        ("auth/token/create/-bad", {}),
    ]
    for path, body in cases:
        answer = _post(url, root, path, body)
        assert answer.status_code == 400, (path, answer.status_code, answer.text)
        errors = answer.json()["errors"]
        assert len(errors) == 1 and "\n" not in errors[0] and len(errors[0]) < 300, (path, errors)
    assert requests.get(f"{url}/v1/auth/token/roles/ok", headers={"X-Vault-Token": root}, timeout=10).status_code == 404
    assert _stored_tokens(server) == before
    # A long display name is cut to what a lookup shows; made-up batch tokens are no tokens.
    long_name = server.client(root).auth.token.create(policies=["app"], display_name="n" * 10_000)["auth"]
    looked = server.client(root).auth.token.lookup_accessor(long_name["accessor"])["data"]
    assert looked["display_name"] == ("token-" + "n" * 10_000)[:128]
    for made_up in ("kmsb." + "A" * 60, "kmsb." + "A" * 5000, "kmsb.!!"):
        answer = requests.get(f"{url}/v1/auth/token/lookup-self", headers={"X-Vault-Token": made_up}, timeout=10)
        assert answer.status_code == 403, (made_up[:20], answer.status_code)


def test_hvac_token_role_methods(server, root):
    client = server.client(root)
    client.auth.token.create_or_update_role(
        "hv", allowed_policies=["app"], token_period="2h", token_explicit_max_ttl="8h", renewable=True
    )
    data = client.auth.token.read_role("hv")["data"]
    assert data["allowed_policies"] == ["app"] and data["token_period"] == 7200
    assert data["token_explicit_max_ttl"] == 8 * 3600 and data["orphan"] is False
    assert client.auth.token.list_roles()["data"]["keys"] == ["hv"]
    auth = client.auth.token.create(role_name="hv")["auth"]
    assert _granted(auth["policies"]) == ["app"] and 7100 < auth["lease_duration"] <= 7200
    looked = client.auth.token.lookup(auth["client_token"])["data"]
    assert looked["period"] == 7200 and looked["explicit_max_ttl"] == 8 * 3600
    client.auth.token.delete_role("hv")
    with pytest.raises(hvac.exceptions.InvalidPath):
        client.auth.token.read_role("hv")
    with pytest.raises(hvac.exceptions.InvalidRequest, match="unknown role hv"):
        client.auth.token.create(role_name="hv")


def test_a_namespace_takes_its_roles_and_batch_tokens_with_it(server, root):
    url = server.url
    in_ns = {"X-Vault-Token": root, "X-Vault-Namespace": "team"}
    assert _post(url, root, "sys/namespaces/team").status_code in (200, 204)
    written = requests.post(f"{url}/v1/auth/token/roles/r", headers=in_ns, json={"orphan": True}, timeout=10)
    assert written.status_code == 204, written.text
    made = requests.post(
        f"{url}/v1/auth/token/create-orphan", headers=in_ns, json={"policies": ["p"], "type": "batch"}, timeout=10
    )
    batch = made.json()["auth"]["client_token"]

    def alive() -> bool:
        headers = {"X-Vault-Token": batch, "X-Vault-Namespace": "team"}
        return requests.get(f"{url}/v1/auth/token/lookup-self", headers=headers, timeout=10).ok

    assert alive()
    # Roles are the namespace's: the root namespace has none.
    assert requests.get(f"{url}/v1/auth/token/roles/r", headers={"X-Vault-Token": root}, timeout=10).status_code == 404
    deleted = requests.delete(f"{url}/v1/sys/namespaces/team", headers={"X-Vault-Token": root}, timeout=10)
    assert deleted.status_code in (200, 204), deleted.text
    assert _post(url, root, "sys/namespaces/team").status_code in (200, 204)  # the same name again
    deadline = time.monotonic() + 30  # the token cache forgets within --cache-ttl
    while alive():
        assert time.monotonic() < deadline, "a batch token outlived its namespace"
        time.sleep(0.05)
    assert requests.get(f"{url}/v1/auth/token/roles/r", headers=in_ns, timeout=10).status_code == 404
