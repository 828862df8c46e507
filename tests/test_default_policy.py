"""Vault's default policy and policy names on SQLite and PostgreSQL, through OpenBao's CLI, hvac and curl: the
paths it grants are refused to a token made without it, it is shown in lookups, it can be rewritten and not
deleted, tokens made before it existed keep its paths; names are lowercased; capabilities keep a trailing '/'."""

from __future__ import annotations

import json
import os
import subprocess

import hvac
import hvac.exceptions
import pytest
import requests
from baocli import bao
from openbao import dev_server
from processes import cli_env, run_cli
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


def test_cli_token_create_no_default_policy(database_url, data_dir):
    env = cli_env(database_url, data_dir)
    run_cli(["migrate"], env)
    run_cli(["keys", "create", "vault-enc", "--type", "chacha20-poly1305"], env)  # a grant must name a key
    made = run_cli(["token", "create", "--policy", "encrypt:vault-enc", "--ttl", "1h"], env).stdout
    assert "policies: default, encrypt:vault-enc" in made
    bare = run_cli(["token", "create", "--policy", "encrypt:vault-enc", "--no-default-policy", "--ttl", "1h"], env)
    assert "policies: encrypt:vault-enc\n" in bare.stdout
    assert "policies: root\n" in run_cli(["token", "create", "--policy", "root", "--ttl", "1h"], env).stdout


# -- the same requests to OpenBao ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def openbao():
    with dev_server() as url:
        yield url


class Side:
    """One server and its root token, asked the same things as the other."""

    def __init__(self, url: str, root: str) -> None:
        self.url, self.root = url, root

    def send(self, method, path, body=None, token=None, headers=None):
        sent = {"X-Vault-Token": self.root if token is None else token, **(headers or {})}
        return requests.request(method, f"{self.url}/v1/{path}", headers=sent, json=body, timeout=30)

    def token(self, **body) -> str:
        made = self.send("POST", "auth/token/create", {"ttl": "1h", **body})
        assert made.status_code == 200, made.text
        return made.json()["auth"]["client_token"]

    def wrapped(self, secret: str) -> str:
        reply = self.send("POST", "sys/wrapping/wrap", {"secret": secret}, headers={"X-Vault-Wrap-TTL": "300"})
        return reply.json()["wrap_info"]["token"]


@pytest.fixture
def sides(openbao, server, root):
    return Side(server.url, root), Side(openbao, "root")


def _errors(response) -> tuple[int, list[str]]:
    """Status and errors, OpenBao's multierror wrapping taken off."""
    body = response.json() if response.content else {}
    errors = [e.removeprefix("1 error occurred:\n\t* ").strip() for e in body.get("errors", [])]
    return response.status_code, errors


PARITY_DOCUMENTS = {
    "dup-json": '{"path": {"transit/keys/a": {"capabilities": ["read"]}, '
    '"transit/keys/a": {"capabilities": ["deny"]}}}',
    "dup-hcl": 'path "transit/keys/b" { capabilities = ["read"] }\npath "transit/keys/b" { capabilities = ["list"] }\n'
    'path "transit/keys/c" {\n  capabilities = ["deny"]\n  capabilities = ["read"]\n}\n'
    'path "transit/keys/d/" { capabilities = ["list"] }\npath "transit/keys/e" { capabilities = ["list"] }',
}
PARITY_PATHS = ["transit/keys/a", "transit/keys/b", "transit/keys/c", "transit/keys/d/", "transit/keys/d"]
PARITY_PATHS += ["transit/keys/e/", "/transit/keys/e/"]


@pytest.mark.sqlite_only
def test_documents_names_and_capabilities_answer_as_openbaos(sides):
    answers = []
    for side in sides:
        for name, document in PARITY_DOCUMENTS.items():
            assert side.send("PUT", f"sys/policies/acl/{name}", {"policy": document}).status_code == 204
        token = side.token(policies=list(PARITY_DOCUMENTS))
        one = side.send("POST", "sys/capabilities-self", {"paths": ["transit/keys/d/"]}, token=token).json()
        many = side.send("POST", "sys/capabilities-self", {"paths": PARITY_PATHS}, token=token).json()
        written = side.send("PUT", "sys/policies/acl/Parity-Upper", {"policy": 'path "x" { capabilities = ["read"] }'})
        answers.append(
            {
                "one": {k: one[k] for k in ("capabilities", "transit/keys/d/")},
                "many": {path: sorted(many[path]) for path in PARITY_PATHS} | {"merged": "capabilities" in many},
                "plus-star": _errors(
                    side.send("PUT", "sys/policies/acl/ps", {"policy": 'path "/t/+*" { capabilities = ["read"] }'})
                ),
                "bad-capability": _errors(
                    side.send("PUT", "sys/policies/acl/bc", {"policy": 'path "t" { capabilities = ["reed"] }'})
                ),
                "upper-written": written.status_code,
                "upper-read": side.send("GET", "sys/policies/acl/PARITY-UPPER").json()["data"]["name"],
                "upper-listed": "parity-upper" in side.send("LIST", "sys/policies/acl").json()["data"]["keys"],
                "upper-deleted": side.send("DELETE", "sys/policies/acl/parity-UPPER").status_code,
                "upper-gone": side.send("GET", "sys/policies/acl/parity-upper").status_code,
            }
        )
    ours, theirs = answers
    assert ours == theirs


@pytest.mark.sqlite_only
def test_the_default_policy_answers_as_openbaos(sides):
    answers = []
    for side in sides:
        read = side.send("GET", "sys/policies/acl/default").json()["data"]
        made = side.send("POST", "auth/token/create", {"policies": ["foo"]}).json()["auth"]
        bare = side.send("POST", "auth/token/create", {"policies": ["foo"], "no_default_policy": True}).json()["auth"]
        asked = {
            "root-and-more": side.send("POST", "auth/token/create", {"policies": ["root", "foo"]}).json()["auth"],
            "default-declined": side.send(
                "POST", "auth/token/create", {"policies": ["default"], "no_default_policy": True}
            ).json()["auth"],
        }
        wrapping = side.wrapped("s")
        denied = {
            "lookup-self": side.send("GET", "auth/token/lookup-self", token=bare["client_token"]),
            "lookup-self-post": side.send("POST", "auth/token/lookup-self", token=made["client_token"]),
            "capabilities-self": side.send(
                "POST", "sys/capabilities-self", {"paths": ["a"]}, token=bare["client_token"]
            ),
            "renew-self": side.send("POST", "auth/token/renew-self", token=bare["client_token"]),
            "wrap": side.send(
                "POST", "sys/wrapping/wrap", {"a": 1}, token=bare["client_token"], headers={"X-Vault-Wrap-TTL": "60"}
            ),
            "unwrap-body": side.send("POST", "sys/wrapping/unwrap", {"token": wrapping}, token=bare["client_token"]),
            "delete-default": side.send("DELETE", "sys/policies/acl/default"),
        }
        answers.append(
            {
                "read": (read["name"], 'path "auth/token/lookup-self"' in read["policy"]),
                "listed": "default" in side.send("LIST", "sys/policies/acl").json()["data"]["keys"],
                "made": (made["policies"], made["token_policies"]),
                "bare": bare["policies"],
                "asked": {k: v["policies"] for k, v in asked.items()},
                "denied": {k: _errors(v) for k, v in denied.items()},
                "lookup-without-default": side.send(
                    "POST", "sys/wrapping/lookup", {"token": wrapping}, token=bare["client_token"]
                ).status_code,
                "capabilities": side.send(
                    "POST", "sys/capabilities-self", {"paths": ["sys/wrapping/unwrap"]}, token=made["client_token"]
                ).json()["capabilities"],
            }
        )
    ours, theirs = answers
    assert ours == theirs


@pytest.mark.sqlite_only
def test_unwrap_with_a_wrapping_token_as_the_requests_token_and_another_in_the_body(sides):
    """OpenBao answers the body's response and spends both: the request's wrapping token is used up by the
    request itself."""
    answers = []
    for side in sides:
        first, second = side.wrapped("first"), side.wrapped("second")
        answer = side.send("POST", "sys/wrapping/unwrap", {"token": second}, token=first)
        again = [_errors(side.send("POST", "sys/wrapping/unwrap", token=spent)) for spent in (first, second)]
        bad_body = side.send("POST", "sys/wrapping/unwrap", {"token": "nonsense"}, token=side.wrapped("third"))
        answers.append((answer.status_code, answer.json()["data"], again, _errors(bad_body)))
    ours, theirs = answers
    assert ours == theirs
    assert ours[1] == {"secret": "second"}


@pytest.mark.sqlite_only
def test_unwrap_with_the_same_wrapping_token_both_ways(sides):
    """An intended difference: OpenBao fails (500) and the token is spent, its response lost; here the response
    is answered once, as if the token had been given one way."""
    ours, theirs = sides
    token = theirs.wrapped("same")
    failed = theirs.send("POST", "sys/wrapping/unwrap", {"token": token}, token=token)
    assert failed.status_code == 500
    assert _errors(theirs.send("POST", "sys/wrapping/unwrap", token=token))[0] in (400, 403)
    token = ours.wrapped("same")
    answered = ours.send("POST", "sys/wrapping/unwrap", {"token": token}, token=token)
    assert answered.status_code == 200 and answered.json()["data"] == {"secret": "same"}
    assert _errors(ours.send("POST", "sys/wrapping/unwrap", {"token": token}, token=token)) == (
        400,
        ["wrapping token is not valid or does not exist"],
    )


@pytest.mark.sqlite_only
def test_capabilities_accessor_answers_as_openbaos(sides, server):
    answers = []
    for side in sides:
        made = side.send("POST", "auth/token/create", {"policies": ["foo"], "ttl": "1h"}).json()["auth"]
        accessor = made["accessor"]
        paths = ["sys/wrapping/unwrap", "auth/token/lookup-self/", "/transit/keys/"]
        asked = {
            "many": {"accessor": accessor, "paths": paths},
            "one": {"accessor": accessor, "paths": ["auth/token/lookup-self"]},
            "unknown": {"accessor": "0" * 24, "paths": ["a"]},
            "no-accessor": {"paths": ["a"]},
            "no-paths": {"accessor": accessor},
            "empty-path": {"accessor": accessor, "paths": [""]},
        }
        answer = {}
        for case, body in asked.items():
            response = side.send("POST", "sys/capabilities-accessor", body)
            answer[case] = response.json()["data"] if response.status_code == 200 else _errors(response)
        answer["without-grant"] = _errors(
            side.send("POST", "sys/capabilities-accessor", asked["one"], token=made["client_token"])
        )
        answers.append(answer)
    ours, theirs = answers
    assert ours == theirs
    assert ours["one"] == {"auth/token/lookup-self": ["read"], "capabilities": ["read"]}
    # hvac's get_capabilities(accessor=...) lands here.
    accessor = server.client(server.root_token()).auth.token.create(policies=["app"], ttl="1h")["auth"]["accessor"]
    answer = server.client(server.root_token()).sys.get_capabilities(["transit/keys/"], accessor=accessor)
    assert answer["capabilities"] == ["list"]


@pytest.mark.sqlite_only
def test_a_tokens_self_paths_below_its_namespace_answer_as_openbaos(sides):
    """The token store's *-self paths are the token's own, from any namespace below its own (its default policy
    grants them there); the other paths of the default policy are the request's namespace's."""
    answers = []
    namespace = f"selfns{os.urandom(2).hex()}"
    for side in sides:
        assert side.send("POST", f"sys/namespaces/{namespace}").status_code == 200
        made = side.token(policies=["foo"])
        bare = side.token(policies=["foo"], no_default_policy=True)
        header = {"X-Vault-Namespace": namespace}
        answer = {}
        for name, token in (("made", made), ("bare", bare)):
            answer[name] = [
                side.send("GET", f"{namespace}/auth/token/lookup-self", token=token).status_code,
                side.send("GET", "auth/token/lookup-self", token=token, headers=header).status_code,
                side.send("POST", f"{namespace}/sys/capabilities-self", {"paths": ["a"]}, token=token).status_code,
                side.send(
                    "POST", f"{namespace}/sys/wrapping/wrap", {"a": 1}, token=token, headers={"X-Vault-Wrap-TTL": "60"}
                ).status_code,
                side.send("POST", f"{namespace}/auth/token/revoke-self", token=token).status_code,
                side.send("GET", "auth/token/lookup-self", token=token).status_code,
            ]
        answers.append(answer)
    ours, theirs = answers
    assert ours == theirs
    assert ours["made"] == [200, 200, 403, 403, 204, 403]


@pytest.mark.sqlite_only
def test_rewriting_the_default_policy_answers_as_openbaos(sides):
    narrower = 'path "auth/token/lookup-self" { capabilities = ["read"] }'
    answers = []
    for side in sides:
        shipped = side.send("GET", "sys/policies/acl/default").json()["data"]["policy"]
        token = side.token(policies=["foo"])
        try:
            written = side.send("PUT", "sys/policies/acl/default", {"policy": narrower}).status_code
            answers.append(
                {
                    "written": written,
                    "read": side.send("GET", "sys/policies/acl/default").json()["data"]["policy"] == narrower,
                    "lookup-self": side.send("GET", "auth/token/lookup-self", token=token).status_code,
                    "capabilities-self": _errors(
                        side.send("POST", "sys/capabilities-self", {"paths": ["a"]}, token=token)
                    ),
                    "written-upper": side.send("PUT", "sys/policies/acl/DEFAULT", {"policy": narrower}).status_code,
                }
            )
        finally:
            side.send("PUT", "sys/policies/acl/default", {"policy": shipped})
    ours, theirs = answers
    assert ours == theirs
    assert ours["capabilities-self"] == (403, ["permission denied"])


def test_root_named_in_capitals_is_root_and_stays_out_of_reach(server, root):
    """Names are lowercased before any rule sees them: 'ROOT' is root for a root parent, and refused to a
    parent that may not give root (the mistake behind CVE-2025-5999 was lowercasing in one place only)."""
    server.call(server.kms.policies.write("creator", 'path "auth/token/create" { capabilities = ["update"] }'))
    client = server.client(root)
    assert client.auth.token.create(policies=["ROOT"], ttl="1h")["auth"]["policies"] == ["root"]
    creator = server.client(client.auth.token.create(policies=["creator", "app"], ttl="1h")["auth"]["client_token"])
    for asked in (["ROOT"], ["Root", "app"], ["app", "rOOt"]):
        with pytest.raises(hvac.exceptions.InvalidRequest, match="subset"):
            creator.auth.token.create(policies=asked)
    refused = requests.put(
        f"{server.url}/v1/sys/policies/acl/ROOT",
        headers={"X-Vault-Token": root},
        json={"policy": 'path "*" { capabilities = ["sudo"] }'},
        timeout=10,
    )
    assert refused.status_code == 400, refused.text


@pytest.mark.sqlite_only
def test_root_in_capitals_is_refused_as_openbao_refuses_it(sides):
    answers = []
    for side in sides:
        document = {"policy": 'path "*" { capabilities = ["sudo"] }'}
        answers.append(
            [
                _errors(side.send("PUT", "sys/policies/acl/ROOT", document)),
                _errors(side.send("PUT", "sys/policy/Root", document)),
                _errors(side.send("DELETE", "sys/policies/acl/rOOt")),
                _errors(side.send("POST", "auth/token/create", {"policies": ["ROOT"]}))[0],
            ]
        )
    ours, theirs = answers
    assert ours == theirs
    assert ours[0] == (400, ['cannot update "root" policy'])
