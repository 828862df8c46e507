"""The path framework itself: the trie router, the table's own checks, Vault's existence check (create versus
update) and batch error handling, with small paths that exist only in these tests."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from typing import Any

import pytest
import requests

from kms_service.errors import InvalidRequest
from kms_service.keyring import validate_key_name
from kms_service.web.body import HEAVY_PAUSE, LIGHT_WINDOW, HeavyLane
from kms_service.web.execution import OFFLOAD_ITEMS, Items
from kms_service.web.framework import Batch, Call, Field, FieldType, Operation, Path
from kms_service.web.paths import TABLE
from kms_service.web.routing import ROUTER_KEY, Router

# The HTTP surface: the database plays no part here (tests of storage run on both).
pytestmark = pytest.mark.sqlite_only


async def _nothing(call: Call, args: dict[str, Any]) -> dict[str, Any]:
    return {}


def _path(pattern: str, *params: str, **operations: Operation) -> Path:
    fields = tuple(Field(p, FieldType.STRING, p) for p in params)
    return Path(pattern, pattern, fields, operations or {"GET": Operation(_nothing)})


# -- the router ---------------------------------------------------------------------------------------


def test_a_literal_segment_beats_a_parameter_and_lookup_backtracks():
    router = Router(
        [
            _path("transit/keys/:name", "name"),
            _path("transit/keys/:name/rotate", "name"),
            _path("transit/keys/special"),
            _path("a/:x/c", "x"),
            _path("a/b/d"),
        ]
    )

    def find(path: str):
        found = router.find(path.split("/"))
        return found and (found[0].pattern, found[1])

    assert find("transit/keys/rotate") == ("transit/keys/:name", {"name": "rotate"})
    assert find("transit/keys/rotate/rotate") == ("transit/keys/:name/rotate", {"name": "rotate"})
    assert find("transit/keys/special") == ("transit/keys/special", {})
    assert find("transit/keys/special/rotate") == ("transit/keys/:name/rotate", {"name": "special"})
    assert find("a/b/d") == ("a/b/d", {})
    assert find("a/b/c") == ("a/:x/c", {"x": "b"})  # the literal 'b' leads nowhere: back to ':x'
    assert find("a/b") is None and find("transit") is None and find("transit/keys/x/config") is None
    assert router.find(["a"] * 5000) is None  # deeper than any pattern: no walk at all


def test_every_pattern_of_the_table_finds_its_own_path():
    router = Router(TABLE)
    for path in TABLE:
        for pattern in path.patterns:
            segments = [s[1:] + "-value" if s.startswith((":", "*")) else s for s in pattern]
            found = router.find(segments)
            assert found is not None and found[0] is path, pattern
            assert found[1] == {s[1:]: s[1:] + "-value" for s in pattern if s.startswith((":", "*"))}


def test_a_glob_parameter_takes_several_segments_shortest_first():
    router = Router(TABLE)
    found = router.find(["sys", "mounts", "teams", "eu", "payments"])
    assert found is not None and found[0].pattern == "sys/mounts/*path"
    assert found[1] == {"path": "teams/eu/payments"}
    # As Vault's non-greedy (?P<path>.+?)/tune: the tune path wins over a mount named ".../tune".
    found = router.find(["sys", "mounts", "teams", "eu", "tune"])
    assert found is not None and found[0].pattern == "sys/mounts/*path/tune"
    assert found[1] == {"path": "teams/eu"}
    assert router.find(["sys", "mounts"])[0].pattern == "sys/mounts"
    assert router.find(["sys", "mounts", *["a"] * 9]) is None  # at most MAX_GLOB_SEGMENTS


def test_the_table_refuses_ambiguous_or_incomplete_paths():
    with pytest.raises(ValueError, match="already"):
        Router([_path("transit/keys/:name", "name"), _path("transit/keys/:name", "name")])
    with pytest.raises(ValueError, match="same place"):
        Router([_path("transit/keys/:name", "name"), _path("transit/keys/:other/rotate", "other")])
    with pytest.raises(ValueError, match="without a field"):
        _path("transit/keys/:name")
    with pytest.raises(ValueError, match="PUT is POST"):
        _path("x", PUT=Operation(_nothing))
    with pytest.raises(ValueError, match="existence check is for POST"):
        _path("x", GET=Operation(_nothing, existence=_exists))
    with pytest.raises(ValueError, match="bad path pattern"):
        _path("transit/(keys)")
    with pytest.raises(ValueError, match="declared twice"):
        Path("x", "x", (Field("a", FieldType.INT, "a"), Field("a", FieldType.INT, "a")), {"GET": Operation(_nothing)})


def test_an_optional_last_parameter_makes_two_patterns():
    sign = next(p for p in TABLE if p.pattern == "transit/sign/:name(/:hash)")
    assert sign.patterns == (("transit", "sign", ":name"), ("transit", "sign", ":name", ":hash"))
    assert sign.params == ("name", "hash")
    assert "PUT" not in sign.operations and sign.operations["POST"].body


# -- fields and items ---------------------------------------------------------------------------------


def test_field_parsing_rules():
    required = Field("ciphertext", FieldType.STRING, "", required="missing ciphertext")
    for missing in (None, ""):
        with pytest.raises(InvalidRequest, match="missing ciphertext"):
            required.parse(missing)
    plaintext = Field("plaintext", FieldType.BASE64, "", required="missing plaintext")
    assert plaintext.parse("") == b""  # an empty base64 string is a value, not a missing one
    refused = Field("nonce", FieldType.BASE64, "", refuse="no nonce")
    assert refused.parse(None) is None
    for value in ("AAAA", "%%%", 5, False):
        with pytest.raises(InvalidRequest, match="no nonce"):
            refused.parse(value)
    ignored = Field("type", FieldType.STRING, "", ignored=True)
    assert ignored.parse(5) == 5
    checked = Field("name", FieldType.STRING, "", check=validate_key_name)
    with pytest.raises(InvalidRequest, match="invalid key name"):
        checked.parse("bad name")
    assert Field("v", FieldType.INT, "", default=0).parse(None) == 0
    assert Field("v", FieldType.INT, "").parse("12") == 12


async def test_items_raise_without_batch_input_and_record_with_it():
    def double(item):
        if item["n"] < 0:
            raise InvalidRequest("negative")
        return {"n": item["n"] * 2}

    single = Items([{"n": -1}], [None], batched=False)
    with pytest.raises(InvalidRequest, match="negative"):
        await single.respond(double)
    batch = Items([{"n": 1}, {"n": -1}, {"n": 3}, {"n": 4}], [None, None, None, "bad input"], batched=True)
    assert batch.map(lambda item: item["n"]) == [1, -1, 3]
    assert batch.field("n") == [1, -1, 3]  # the items in play only, as map
    await batch.respond(double)
    assert batch.results == [{"n": 2}, None, {"n": 6}, None]
    assert batch.errors == [None, "negative", None, "bad input"]


async def test_a_large_batch_is_answered_off_the_event_loop_with_the_same_results():
    loop_thread = threading.get_ident()
    threads = set()

    def double(item):
        threads.add(threading.get_ident())
        if item["n"] % 7 == 0:
            raise InvalidRequest("a multiple of 7")
        return {"n": item["n"] * 2}

    for count, off_loop in ((OFFLOAD_ITEMS - 1, False), (OFFLOAD_ITEMS, True), (10_000, True)):
        threads.clear()
        batch = Items([{"n": n} for n in range(count)], [None] * count, batched=True)
        await batch.respond(double)
        assert threads == ({loop_thread} if not off_loop else threads - {loop_thread}) and threads
        assert batch.results == [None if n % 7 == 0 else {"n": n * 2} for n in range(count)]
        assert batch.errors == ["a multiple of 7" if n % 7 == 0 else None for n in range(count)]


# -- existence check and batch errors, on the real server ---------------------------------------------

EXISTENCE_CALLS: list[str] = []


async def _exists(call: Call) -> bool:
    EXISTENCE_CALLS.append(call.params["name"])
    return await call.kms.keys.get(call.params["name"]) is not None


async def _upsert(call: Call, args: dict[str, Any]) -> dict[str, Any]:
    return {"existed": call.existed, "size": args["size"]}


def _probe(prefix: str, check_acl: bool = True) -> Path:
    return Path(
        f"{prefix}/:name/upsert-probe",
        "A test-only path with an existence check.",
        (Field("name", FieldType.STRING, "Key name.", check=validate_key_name), Field("size", FieldType.INT, "")),
        {"POST": Operation(_upsert, existence=_exists), "GET": Operation(_upsert)},
        check_acl=check_acl,
    )


class Boom(Exception):
    pass


async def _explode(call: Call, args: dict[str, Any], items: Items) -> None:
    def one(item: dict[str, Any]) -> dict[str, Any]:
        if item["text"] == "boom":
            raise Boom("the disk is on fire")
        if item["text"] == "bad":
            raise InvalidRequest("bad item")
        return {"echo": item["text"]}

    await items.respond(one)


EXPLODE = Path(
    "test/explode",
    "A test-only batch path whose items can fail in both ways.",
    (Field("text", FieldType.STRING, "", batch=True, default=""),),
    {"POST": Operation(_explode, batch=Batch())},
)


@pytest.fixture
def probed(server):
    router = server._runner.app[ROUTER_KEY]
    for path in (_probe("transit/sign"), _probe("transit/keys"), _probe("auth/probe", check_acl=False), EXPLODE):
        router.add(path)
    EXISTENCE_CALLS.clear()
    return server


def _token(server, *policies: str) -> str:
    return server.call(server.kms.tokens.create(list(policies), timedelta(hours=1)))[0]


def _post(server, token: str | None, path: str, body: dict | None = None, method: str = "POST"):
    headers = {"X-Vault-Token": token} if token else {}
    return requests.request(method, f"{server.url}/v1/{path}", json=body, headers=headers, timeout=30)


def test_existence_check_makes_a_post_a_create_or_an_update(probed):
    server = probed
    # sign:<key> grants read and update on transit/sign/<key>/*, never create.
    signer_existing, signer_ghost = _token(server, "sign:vault-sign"), _token(server, "sign:ghost")
    answer = _post(server, signer_existing, "transit/sign/vault-sign/upsert-probe", {"size": "3"})
    assert answer.status_code == 200 and answer.json()["data"] == {"existed": True, "size": 3}
    put = _post(server, signer_existing, "transit/sign/vault-sign/upsert-probe", {}, method="PUT")
    assert put.status_code == 200 and put.json()["data"]["existed"] is True
    denied = _post(server, signer_ghost, "transit/sign/ghost/upsert-probe", {})
    assert denied.status_code == 403 and denied.json() == {"errors": ["permission denied"]}

    # admin:<key> grants create and update on transit/keys/<key>/*; root grants everything.
    for token in (_token(server, "admin:ghost"), _token(server, "root")):
        created = _post(server, token, "transit/keys/ghost/upsert-probe", {})
        assert created.status_code == 200 and created.json()["data"] == {"existed": False, "size": None}
    assert _post(server, _token(server, "admin:vault-enc"), "transit/keys/vault-enc/upsert-probe", {}).json()["data"][
        "existed"
    ]
    # Without an ACL check (any valid token), the handler still learns whether it creates.
    for key, existed in (("vault-enc", True), ("ghost", False)):
        unchecked = _post(server, signer_ghost, f"auth/probe/{key}/upsert-probe", {})
        assert unchecked.status_code == 200 and unchecked.json()["data"]["existed"] is existed
    assert EXISTENCE_CALLS == ["vault-sign", "vault-sign", "ghost", "ghost", "ghost", "vault-enc", "vault-enc", "ghost"]

    # Never consulted: without a valid token, for a malformed name, or for another method.
    EXISTENCE_CALLS.clear()
    assert _post(server, None, "transit/sign/vault-sign/upsert-probe", {}).status_code == 403
    assert _post(server, "kms.bogus", "transit/sign/vault-sign/upsert-probe", {}).status_code == 403
    bad_name = _post(server, _token(server, "root"), "transit/keys/bad%20name/upsert-probe", {})
    assert bad_name.status_code == 400 and "invalid key name" in bad_name.json()["errors"][0]
    read = _post(server, signer_existing, "transit/sign/vault-sign/upsert-probe", method="GET")
    assert read.status_code == 200 and read.json()["data"]["existed"] is None
    assert EXISTENCE_CALLS == []


def test_a_user_error_fails_one_item_an_internal_error_fails_the_request(probed, caplog):
    root = _token(probed, "root")
    mixed = _post(probed, root, "test/explode", {"batch_input": [{"text": "a"}, {"text": "bad", "reference": "r"}]})
    assert mixed.status_code == 200
    assert mixed.json()["data"]["batch_results"] == [
        {"echo": "a", "reference": ""},
        {"error": "bad item", "reference": "r"},
    ]
    aborted = _post(probed, root, "test/explode", {"batch_input": [{"text": "a"}, {"text": "boom"}]})
    assert aborted.status_code == 500 and aborted.json() == {"errors": ["internal error"]}
    assert "the disk is on fire" in caplog.text  # logged for the operator, not sent to the caller
    assert _post(probed, root, "test/explode", {"text": "bad"}).json() == {"errors": ["bad item"]}
    assert _post(probed, root, "test/explode", {"text": "boom"}).status_code == 500
    single = _post(probed, root, "test/explode", {"text": "a"})
    assert single.status_code == 200 and single.json()["data"] == {"echo": "a"}


def test_a_wrong_type_in_any_item_fails_the_request_before_any_item_runs(probed):
    """Decode errors (Vault's "failed to parse batch input") come first: item 0 would explode, but item 1
    is not a string, so nothing runs."""
    root = _token(probed, "root")
    response = _post(probed, root, "test/explode", {"batch_input": [{"text": "boom"}, {"text": 5}]})
    assert response.status_code == 400
    assert response.json() == {"errors": ["failed to parse batch input: '[1].text' must be a string"]}


# -- the heavy lane ------------------------------------------------------------------------------------


def test_the_heavy_lane_pauses_only_while_other_requests_are_served():
    lane = HeavyLane()
    assert not lane._contended(100.0)  # nobody else was ever served
    lane.light_requests += 1
    assert lane._contended(100.0)  # one was, just now
    assert lane._contended(100.0 + LIGHT_WINDOW - 0.01)  # and within the window
    assert not lane._contended(100.0 + LIGHT_WINDOW)  # none since: the window is over
    lane.light_requests += 1
    assert lane._contended(200.0)


async def test_a_heavy_job_is_followed_by_a_pause_only_under_contention():
    lane = HeavyLane()
    job = 0.1
    start = time.monotonic()
    assert await lane.run(lambda: time.sleep(job) or "done") == "done"
    alone = time.monotonic() - start
    lane.light_requests += 1
    start = time.monotonic()
    await lane.run(time.sleep, job)
    contended = time.monotonic() - start
    assert contended >= job * (1 + HEAVY_PAUSE)  # the pause: a lower bound, whatever the machine's load
    assert alone < job * (1 + HEAVY_PAUSE) / 2, alone  # no pause: well under half of that
