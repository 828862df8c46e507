"""Vault's response wrapping: X-Vault-Wrap-TTL (bao's -wrap-ttl, hvac's wrap_ttl) keeps the answer under a
single-use wrapping token; sys/wrapping/unwrap, lookup, rewrap and wrap; policies' min/max_wrapping_ttl; the
wrapped response sealed in the database, taken once across nodes, reaped at expiry; OpenBao's answers."""

from __future__ import annotations

import base64
import json
import threading
from datetime import timedelta

import hvac
import hvac.exceptions
import pytest
import requests
from baocli import bao, bao_json
from test_openbao_parity import openbao  # noqa: F401 (a fixture)

from kms_service.storage import repository as repo

NOT_VALID = "wrapping token is not valid or does not exist"
EMPTY = "error validating wrapping token: token is empty"

WRAPPING_POLICY = """
path "transit/datakey/*" {
  capabilities = ["update"]
  min_wrapping_ttl = "30s"
  max_wrapping_ttl = "5m"
}
path "transit/keys/*" {
  capabilities = ["read", "create", "update"]
  max_wrapping_ttl = 100
}
"""
WRAPPING_POLICY_JSON = (
    '{"path": {"transit/datakey/*": {"capabilities": ["update"], "min_wrapping_ttl": 60, "max_wrapping_ttl": "2m"}}}'
)


def send(server, method, path, token=None, body=None, wrap=None, headers=None):
    sent = dict(headers or {})
    if token is not None:
        sent["X-Vault-Token"] = token
    if wrap is not None:
        sent["X-Vault-Wrap-TTL"] = str(wrap)
    return requests.request(method, f"{server.url}/v1/{path}", headers=sent, json=body, timeout=30)


def root_token(server) -> str:
    return server.root_token()


def token_with(server, policies) -> str:
    return server.call(server.kms.tokens.create(policies, timedelta(hours=1)))[0]


def make_key(server, token, name):
    assert send(server, "POST", f"transit/keys/{name}", token).status_code in (200, 204)


def wrapped(reply: requests.Response) -> dict:
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["data"] is None and body["auth"] is None and body["wrap_info"] is not None, body
    return body["wrap_info"]


def stored_rows(server) -> int:
    async def count() -> int:
        async with server.kms.db.reading() as session:
            return await repo.count_wrapped_responses(session)

    return server.call(count())


# -- wrapping answers and unwrapping them, on both databases ---------------------------------------------


def test_a_wrapped_datakey_is_answered_only_as_a_token_and_unwraps_once(server):
    root = root_token(server)
    make_key(server, root, "wrap-dk")
    info = wrapped(send(server, "POST", "transit/datakey/plaintext/wrap-dk", root, wrap="60s"))
    assert set(info) == {"token", "accessor", "ttl", "creation_time", "creation_path"}
    assert info["ttl"] == 60 and info["creation_path"] == "transit/datakey/plaintext/wrap-dk"
    assert info["creation_time"].endswith("Z")
    # The secret is in the database only sealed, and the token only as its HMAC.
    assert stored_rows(server) == 1

    async def raw_row():
        async with server.kms.db.reading() as session:
            return await repo.find_wrapped_response(session, server.kms.tokens.digest(info["token"]), _now())

    row = server.call(raw_row())
    assert row is not None and b"plaintext" not in row.sealed_response
    assert info["token"].encode() not in row.sealed_response

    unwrapped = send(server, "POST", "sys/wrapping/unwrap", info["token"])
    assert unwrapped.status_code == 200, unwrapped.text
    data = unwrapped.json()["data"]
    assert data["ciphertext"].startswith(("vault:v1:", "vault-kms:v1:"))
    assert len(base64.b64decode(data["plaintext"])) == 32
    # The plaintext decrypts from the ciphertext: the real datakey, not a copy of anything else.
    decrypted = send(server, "POST", "transit/decrypt/wrap-dk", root, {"ciphertext": data["ciphertext"]})
    assert decrypted.json()["data"]["plaintext"] == data["plaintext"]

    again = send(server, "POST", "sys/wrapping/unwrap", info["token"])
    assert (again.status_code, again.json()) == (400, {"errors": [NOT_VALID]})
    third_party = send(server, "POST", "sys/wrapping/unwrap", root, {"token": info["token"]})
    assert (third_party.status_code, third_party.json()) == (400, {"errors": [NOT_VALID]})
    assert stored_rows(server) == 0


def test_a_wrapped_token_create_unwraps_to_a_working_token(server):
    root = root_token(server)
    info = wrapped(send(server, "POST", "auth/token/create", root, {"policies": ["root"], "ttl": "1h"}, wrap=120))
    assert info["creation_path"] == "auth/token/create" and len(info["wrapped_accessor"]) == 24
    # hvac's sys.unwrap(token) with its own client token, as its documentation shows it.
    unwrapped = hvac.Client(url=server.url, token=root).sys.unwrap(info["token"])
    assert unwrapped["auth"]["accessor"] == info["wrapped_accessor"]
    new_token = unwrapped["auth"]["client_token"]
    assert send(server, "GET", "auth/token/lookup-self", new_token).status_code == 200
    with pytest.raises(hvac.exceptions.InvalidRequest, match=NOT_VALID):
        hvac.Client(url=server.url, token=root).sys.unwrap(info["token"])


def test_hvac_wrap_ttl_and_unwrap_with_the_wrapping_token_as_client_token(shared_server):
    server = shared_server
    root = root_token(server)
    client = hvac.Client(url=server.url, token=root)
    client.secrets.transit.create_key("hvac-wrap")
    reply = client.write_data("transit/datakey/plaintext/hvac-wrap", wrap_ttl="90s")
    assert reply["data"] is None and reply["wrap_info"]["ttl"] == 90
    # hvac with default settings and the wrapping token as its token: sys.unwrap() with no argument.
    unwrapped = hvac.Client(url=server.url, token=reply["wrap_info"]["token"]).sys.unwrap()
    assert unwrapped["data"]["ciphertext"].startswith(("vault:v1:", "vault-kms:v1:"))


def test_bao_cli_wrap_ttl_and_unwrap(shared_server):
    server = shared_server
    root = root_token(server)
    make_key(server, root, "bao-wrap")
    created = json.loads(bao(server, root, "token", "create", "-format=json", "-wrap-ttl=60s", "-policy=root").stdout)
    assert created.get("auth") is None and created["data"] is None and created["wrap_info"]["ttl"] == 60
    unwrapped = bao_json(server, root, "unwrap", created["wrap_info"]["token"])
    assert unwrapped["auth"]["accessor"] == created["wrap_info"]["wrapped_accessor"]

    written = bao_json(server, root, "write", "-wrap-ttl=60s", "-f", "transit/datakey/plaintext/bao-wrap")
    token = written["wrap_info"]["token"]
    # `bao unwrap` with no argument unwraps its own token (BAO_TOKEN = the wrapping token).
    data = bao_json(server, token, "unwrap")["data"]
    assert data["ciphertext"].startswith(("vault:v1:", "vault-kms:v1:"))
    second = bao(server, token, "unwrap", check=False)
    assert second.returncode != 0 and NOT_VALID in second.stderr


def test_lookup_rewrap_and_wrap(shared_server):
    server = shared_server
    root = root_token(server)
    assert send(server, "POST", "sys/wrapping/wrap", root, {"a": "b"}).json() == {
        "errors": ["endpoint requires response wrapping to be used"]
    }
    info = wrapped(send(server, "POST", "sys/wrapping/wrap", root, {"secret": "s3", "n": 1}, wrap="2m"))
    assert info["creation_path"] == "sys/wrapping/wrap" and info["ttl"] == 120

    # Lookup needs no token but the wrapping token, and does not spend it (GET ?token= and POST).
    looked = send(server, "POST", "sys/wrapping/lookup", body={"token": info["token"]})
    assert looked.status_code == 200
    assert looked.json()["data"] == {
        "creation_path": "sys/wrapping/wrap",
        "creation_time": info["creation_time"],
        "creation_ttl": 120,
    }
    by_get = requests.get(f"{server.url}/v1/sys/wrapping/lookup", params={"token": info["token"]}, timeout=10)
    assert by_get.json()["data"]["creation_ttl"] == 120

    rewrapped = wrapped(send(server, "POST", "sys/wrapping/rewrap", root, {"token": info["token"]}))
    assert rewrapped["token"] != info["token"] and rewrapped["creation_path"] == "sys/wrapping/wrap"
    assert rewrapped["ttl"] == 120
    for path in ("sys/wrapping/unwrap", "sys/wrapping/lookup", "sys/wrapping/rewrap"):
        gone = send(server, "POST", path, root, {"token": info["token"]})
        assert (gone.status_code, gone.json()) == (400, {"errors": [NOT_VALID]}), path
    data = send(server, "POST", "sys/wrapping/unwrap", rewrapped["token"]).json()
    assert data["data"] == {"secret": "s3", "n": 1} and data["warnings"] is None

    # hvac's sys.wrap sends its ttl as X-Vault-Wrap-TTL.
    by_hvac = hvac.Client(url=server.url, token=root).sys.wrap({"h": "v"}, ttl=45)["wrap_info"]
    assert by_hvac["ttl"] == 45
    assert send(server, "POST", "sys/wrapping/unwrap", by_hvac["token"]).json()["data"] == {"h": "v"}

    # An unwrapped answer may itself be asked for wrapped.
    inner = wrapped(send(server, "POST", "sys/wrapping/wrap", root, {"x": "y"}, wrap=60))
    outer = wrapped(send(server, "POST", "sys/wrapping/unwrap", root, {"token": inner["token"]}, wrap=60))
    assert outer["creation_path"] == "sys/wrapping/unwrap"
    assert send(server, "POST", "sys/wrapping/unwrap", outer["token"]).json()["data"] == {"x": "y"}


def test_bad_wrap_ttls_and_tokens_are_refused_in_vaults_words(shared_server):
    server = shared_server
    root = root_token(server)
    for value, message in (
        ("abc", 'error parsing X-Vault-Wrap-TTL header: time: invalid duration "abc"'),
        ("-5", "error parsing X-Vault-Wrap-TTL header: requested wrap ttl cannot be negative"),
        ("1x", 'error parsing X-Vault-Wrap-TTL header: time: invalid duration "1x"'),
    ):
        reply = send(server, "POST", "auth/token/create", root, {}, wrap=value)
        assert (reply.status_code, reply.json()) == (400, {"errors": [message]}), value
    # 0 is no wrapping at all (Vault).
    assert send(server, "POST", "auth/token/create", root, {}, wrap=0).json()["auth"]["client_token"]
    jwt = send(server, "POST", "sys/wrapping/wrap", root, {"a": 1}, wrap=60, headers={"X-Vault-Wrap-Format": "jwt"})
    assert jwt.status_code == 400
    for token in ("kms.not-a-wrapping-token-at-all-xxxxxxxxxxxxxxxxx", "garbage", root):
        reply = send(server, "POST", "sys/wrapping/unwrap", token)
        assert (reply.status_code, reply.json()) == (400, {"errors": [NOT_VALID]}), token
    for path in ("sys/wrapping/unwrap", "sys/wrapping/lookup"):
        reply = send(server, "POST", path)
        assert (reply.status_code, reply.json()) == (403, {"errors": [EMPTY]})


def test_wrapping_tokens_open_nothing_else_and_escalation_is_refused(shared_server):
    server = shared_server
    root = root_token(server)
    make_key(server, root, "wrap-esc")
    token = wrapped(send(server, "POST", "sys/wrapping/wrap", root, {"a": "b"}, wrap=60))["token"]
    for method, path, body in (
        ("GET", "transit/keys/wrap-esc", None),
        ("POST", "transit/encrypt/wrap-esc", {"plaintext": "AA=="}),
        ("GET", "auth/token/lookup-self", None),
        ("POST", "auth/token/create", {}),
        ("POST", "auth/token/renew-self", {}),
        ("POST", "sys/wrapping/wrap", {"a": "b"}),
        ("POST", "sys/wrapping/rewrap", {}),
        ("POST", "sys/policies/acl/mine", {"policy": 'path "*" { capabilities = ["sudo"] }'}),
    ):
        reply = send(server, method, path, token, body, wrap=60 if path.endswith("wrap") else None)
        assert reply.status_code == 403, (path, reply.text)
    # Someone else's token in the body needs a valid token of one's own.
    assert send(server, "POST", "sys/wrapping/unwrap", "kms.x", {"token": token}).status_code == 403
    assert send(server, "POST", "sys/wrapping/unwrap", body={"token": token}).status_code == 403
    # Rewrap needs the caller's policies to grant it (Vault's default policy does not).
    plain = token_with(server, ["encrypt:wrap-esc"])
    assert send(server, "POST", "sys/wrapping/rewrap", plain, {"token": token}).status_code == 403
    # Wrapping a token create does not lift the rules of token create.
    narrow = token_with(server, ["encrypt:wrap-esc"])
    reply = send(server, "POST", "auth/token/create", narrow, {"policies": ["root"]}, wrap=60)
    assert reply.status_code in (400, 403) and reply.json()["errors"]
    # The token is still good for what it is for.
    assert send(server, "POST", "sys/wrapping/unwrap", token).json()["data"] == {"a": "b"}


def test_policy_wrapping_ttl_limits(shared_server):
    server = shared_server
    root = root_token(server)
    make_key(server, root, "wrap-limits")
    server.call(server.kms.policies.write("wrapping-limits", WRAPPING_POLICY))
    server.call(server.kms.policies.write("wrapping-limits-json", WRAPPING_POLICY_JSON))
    hcl = token_with(server, ["wrapping-limits"])
    for wrap, status in ((None, 403), (10, 403), (30, 200), ("5m", 200), (301, 403)):
        reply = send(server, "POST", "transit/datakey/plaintext/wrap-limits", hcl, wrap=wrap)
        assert reply.status_code == status, (wrap, reply.text)
    # max_wrapping_ttl alone demands wrapping too (Vault).
    for wrap, status in ((None, 403), (100, 200), (101, 403)):
        assert send(server, "GET", "transit/keys/wrap-limits", hcl, wrap=wrap).status_code == status, wrap
    json_token = token_with(server, ["wrapping-limits-json"])
    for wrap, status in ((None, 403), (59, 403), (60, 200), (120, 200), (121, 403)):
        reply = send(server, "POST", "transit/datakey/plaintext/wrap-limits", json_token, wrap=wrap)
        assert reply.status_code == status, (wrap, reply.text)
    # Root is not limited.
    assert send(server, "GET", "transit/keys/wrap-limits", root).status_code == 200
    for document, message in (
        ('path "a/*" {\n capabilities = ["read"]\n min_wrapping_ttl = "abc"\n}', "error parsing min_wrapping_ttl"),
        (
            'path "a/*" {\n capabilities = ["read"]\n min_wrapping_ttl = "10m"\n max_wrapping_ttl = "1m"\n}',
            "max_wrapping_ttl cannot be less than min_wrapping_ttl",
        ),
    ):
        reply = send(server, "PUT", "sys/policies/acl/bad-wrapping", root, {"policy": document})
        assert reply.status_code == 400 and message in reply.json()["errors"][0]


@pytest.mark.sqlite_only
def test_the_audit_log_records_wrapping_without_a_token_or_the_secret_in_the_clear(start_server, tmp_path):
    log = tmp_path / "audit.log"
    server = start_server(audit_file=log)
    root = root_token(server)
    info = wrapped(send(server, "POST", "sys/wrapping/wrap", root, {"secret": "audit-me-not"}, wrap=60))
    assert send(server, "POST", "sys/wrapping/unwrap", info["token"]).json()["data"] == {"secret": "audit-me-not"}
    server.stop()
    records = [json.loads(line) for line in log.read_text().splitlines()]
    paths = [(r["type"], r["request"]["path"]) for r in records if r["type"] in ("request", "response")]
    assert ("response", "sys/wrapping/wrap") in paths and ("response", "sys/wrapping/unwrap") in paths
    wrap_response = next(r for r in records if r["type"] == "response" and r["request"]["path"] == "sys/wrapping/wrap")
    assert wrap_response["response"]["data"]["wrap_info"]["token"].startswith("hmac-sha256:")
    text = log.read_text()
    assert info["token"] not in text and "audit-me-not" not in text


# -- expiry, the reaper, concurrency and other nodes -------------------------------------------------


def _now():
    from datetime import UTC, datetime

    return datetime.now(UTC)


def test_an_expired_wrapping_token_unwraps_nothing_and_the_reaper_deletes_it(server):
    root = root_token(server)
    info = wrapped(send(server, "POST", "sys/wrapping/wrap", root, {"a": "b"}, wrap=1))
    kept = wrapped(send(server, "POST", "sys/wrapping/wrap", root, {"c": "d"}, wrap=600))

    async def expire() -> None:  # the row's clock moved on, instead of the test waiting for it
        from sqlalchemy import update

        from kms_service.storage import models as m

        async with server.kms.db.writing() as session:
            await session.execute(
                update(m.WrappedResponse)
                .where(m.WrappedResponse.accessor == info["accessor"])
                .values(expires_at=_now() - timedelta(seconds=1))
            )

    server.call(expire())
    for path in ("sys/wrapping/unwrap", "sys/wrapping/lookup"):
        reply = send(server, "POST", path, info["token"])
        assert (reply.status_code, reply.json()) == (400, {"errors": [NOT_VALID]})
    assert stored_rows(server) == 2
    assert server.call(server.kms.wrapped_responses.reap()) == 1
    assert stored_rows(server) == 1
    assert send(server, "POST", "sys/wrapping/unwrap", kept["token"]).json()["data"] == {"c": "d"}


def test_the_background_reaper_deletes_expired_wrapped_responses(start_server):
    server = start_server(reap_interval=0.2)
    root = root_token(server)
    wrapped(send(server, "POST", "sys/wrapping/wrap", root, {"a": "b"}, wrap=1))
    deadline = _now() + timedelta(seconds=30)
    while stored_rows(server) and _now() < deadline:
        threading.Event().wait(0.1)  # polling the condition, not a timing assertion
    assert stored_rows(server) == 0


def test_concurrent_unwraps_get_the_response_once(server):
    root = root_token(server)
    info = wrapped(send(server, "POST", "sys/wrapping/wrap", root, {"once": True}, wrap=60))
    results: list[int] = []
    start = threading.Barrier(8)

    def unwrap() -> None:
        start.wait()
        results.append(send(server, "POST", "sys/wrapping/unwrap", info["token"]).status_code)

    threads = [threading.Thread(target=unwrap) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [200] + [400] * 7


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_unwrapped_on_one_node_is_gone_on_the_other(start_server):
    first = start_server()
    second = start_server()
    root = root_token(first)
    info = wrapped(send(first, "POST", "sys/wrapping/wrap", root, {"node": "a"}, wrap=60))
    assert send(second, "POST", "sys/wrapping/lookup", body={"token": info["token"]}).status_code == 200
    assert send(second, "POST", "sys/wrapping/unwrap", info["token"]).json()["data"] == {"node": "a"}
    for node in (first, second):
        reply = send(node, "POST", "sys/wrapping/unwrap", info["token"])
        assert (reply.status_code, reply.json()) == (400, {"errors": [NOT_VALID]})

    # Both nodes asked at once, again and again: each token unwraps on exactly one of them.
    for round_ in range(5):
        token = wrapped(send(first, "POST", "sys/wrapping/wrap", root, {"round": round_}, wrap=60))["token"]
        statuses: list[int] = []
        start = threading.Barrier(4)

        def unwrap(node, token=token, statuses=statuses, start=start) -> None:
            start.wait()
            statuses.append(send(node, "POST", "sys/wrapping/unwrap", token).status_code)

        threads = [threading.Thread(target=unwrap, args=(node,)) for node in (first, second, first, second)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(statuses) == [200, 400, 400, 400], round_


# -- parity with OpenBao --------------------------------------------------------------------------------


@pytest.mark.sqlite_only
def test_wrapping_answers_match_openbao(openbao, shared_server):  # noqa: F811
    server = shared_server
    ours = root_token(server)
    bao_root = "root"

    class Side:
        def __init__(self, url, token):
            self.url, self.token = url, token

    sides = (Side(server.url, ours), Side(openbao, bao_root))
    answers = []
    for side in sides:
        got = {}
        got["wrap"] = send(side, "POST", "sys/wrapping/wrap", side.token, {"k": "v"}, wrap="60s")
        token = got["wrap"].json()["wrap_info"]["token"]
        got["created"] = send(side, "POST", "auth/token/create", side.token, {"policies": ["root"]}, wrap=60)
        got["lookup"] = send(side, "POST", "sys/wrapping/lookup", body={"token": token})
        # Someone else's wrapping token without a valid token of one's own: refused, and the token not spent.
        got["third_party_no_token"] = send(side, "POST", "sys/wrapping/unwrap", body={"token": token})
        got["third_party_bad_token"] = send(side, "POST", "sys/wrapping/unwrap", "kms.bogus", {"token": token})
        got["unwrap"] = send(side, "POST", "sys/wrapping/unwrap", token)
        got["again"] = send(side, "POST", "sys/wrapping/unwrap", token)
        got["again_third_party"] = send(side, "POST", "sys/wrapping/unwrap", side.token, {"token": token})
        got["bad"] = send(side, "POST", "sys/wrapping/unwrap", "kms.nonsense")
        got["lookup_bad"] = send(side, "POST", "sys/wrapping/lookup", body={"token": "nonsense"})
        got["empty"] = send(side, "POST", "sys/wrapping/unwrap")
        got["unwrapped_wrap"] = send(side, "POST", "sys/wrapping/wrap", side.token, {"k": "v"})
        got["bad_ttl"] = send(side, "POST", "sys/wrapping/wrap", side.token, {"k": "v"}, wrap="abc")
        got["negative_ttl"] = send(side, "POST", "sys/wrapping/wrap", side.token, {"k": "v"}, wrap="-5")
        got["wrapping_token_elsewhere"] = send(side, "GET", "auth/token/lookup-self", token)
        got["list"] = send(side, "LIST", "transit/keys", side.token, wrap=60)
        # A policy's wrapping bounds, on a token holding only that policy.
        policy = {
            "policy": 'path "transit/datakey/*" {\n capabilities = ["update"]\n min_wrapping_ttl = "30s"\n'
            ' max_wrapping_ttl = "5m"\n}'
        }
        assert send(side, "PUT", "sys/policies/acl/parity-wrapping", side.token, policy).status_code == 204
        bounded = send(
            side, "POST", "auth/token/create", side.token, {"policies": ["parity-wrapping"], "no_default_policy": True}
        ).json()["auth"]["client_token"]
        for wrap in (None, 10, 30, 300, 301):
            got[f"bounded_{wrap}"] = send(side, "POST", "transit/datakey/plaintext/vault-enc", bounded, wrap=wrap)
        answers.append(got)
    mine, theirs = answers
    for name in mine:
        assert mine[name].status_code == theirs[name].status_code, (name, mine[name].text, theirs[name].text)
        if mine[name].status_code >= 400 and name != "wrapping_token_elsewhere" and not name.startswith("bounded"):
            assert mine[name].json() == theirs[name].json(), (name, mine[name].text, theirs[name].text)
    for name in ("wrap", "created"):
        a, b = mine[name].json(), theirs[name].json()
        assert set(a) == set(b) and set(a["wrap_info"]) == set(b["wrap_info"]), name
        assert a["data"] is None and b["data"] is None and a["request_id"] == b["request_id"] == ""
        assert type(a["wrap_info"]["ttl"]) is type(b["wrap_info"]["ttl"]) is int
    assert set(mine["lookup"].json()["data"]) == set(theirs["lookup"].json()["data"])
    assert mine["list"].json()["wrap_info"]["creation_path"] == theirs["list"].json()["wrap_info"]["creation_path"]
    assert mine["unwrap"].json()["data"] == theirs["unwrap"].json()["data"] == {"k": "v"}


async def test_a_master_key_rotation_reseals_wrapped_responses(database_url, data_dir):
    """Wrapped responses are sealed rows like key versions: a rotation re-seals them, so they unwrap after
    the old key is retired, in a process that had not looked at the rotation yet too."""
    from kms_service.service import KMS
    from kms_service.settings import Settings

    settings = Settings(data_dir=data_dir, database_url=database_url)
    async with KMS.session(settings) as lagging:
        async with KMS.session(settings) as rotating:
            info = await rotating.wrapped_responses.wrap(b'{"data":{"a":"b"}}', "sys/wrapping/wrap", 600)
            rollover = await rotating.master_keys.start()
            progress = await rotating.master_keys.reseal(batch_size=1)
            assert progress.wrapped_responses == 1
            async with rotating.db.reading() as session:
                rows = await repo.rows_by_master_key(session)
            assert rows["wrapped_responses"] == {rollover.new_key_id: 1}
        assert await lagging.wrapped_responses.unwrap(info.token) == b'{"data":{"a":"b"}}'
