"""The hot path's shortcuts answer exactly as the code they skip: same bytes, same errors."""

from __future__ import annotations

import base64
import binascii
import threading

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from kms_service.errors import InvalidRequest
from kms_service.keyring import b64decode_strict, go_base64_error_offset
from kms_service.web.routing import ROUTER_KEY as ROUTER_KEY_FOR_TESTS
from kms_service.web.routing import _split_path

# The HTTP surface: the database plays no part here (tests of storage run on both).
pytestmark = pytest.mark.sqlite_only


def reference_b64decode(value: str) -> bytes:
    """b64decode_strict before its fast path: Go's offsets, then the standard decoder."""
    try:
        raw = value.encode("ascii")
    except UnicodeEncodeError as exc:
        raise ValueError(f"illegal base64 data at input byte {exc.start}") from None
    offset = go_base64_error_offset(raw)
    if offset is not None:
        raise ValueError(f"illegal base64 data at input byte {offset}")
    try:
        return base64.b64decode(raw.replace(b"\r", b"").replace(b"\n", b""), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("illegal base64 data") from None


def outcome(decode, value: str) -> tuple[str, object]:
    try:
        return "ok", decode(value)
    except ValueError as exc:
        return "error", str(exc)


BASE64ISH = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=\r\n-_ é", max_size=40)


@settings(max_examples=3000, deadline=None)
@given(st.one_of(BASE64ISH, st.binary(max_size=40).map(lambda b: base64.b64encode(b).decode())))
def test_b64decode_strict_matches_the_byte_by_byte_reference(value):
    assert outcome(b64decode_strict, value) == outcome(reference_b64decode, value)


EDGES = ["", "QQ==", "QUI=", "QUJD", "QR==", "AAAA=", "QQ=", "Q===", "====", "QQ==QQ==", "QQ\n==", "QQ==\n"]
# A padding-only quantum after whole ones: binascii's strict mode takes it, Go refuses it (found by review).
EDGES += ["AAAA====", "AAAAAAAA====", "AAAA========", "QUI=====", "QUJD=", "AAAA==\n=="]
# Characters past ASCII in whole quanta: binascii refuses the string, the slow path names the offset.
EDGES += ["QUJé", "éééé", "QUJDQUJ\u00e9", "QQ=\u2028"]


@pytest.mark.parametrize("value", EDGES)
def test_b64decode_strict_edges(value):
    assert outcome(b64decode_strict, value) == outcome(reference_b64decode, value)


def test_b64decode_strict_matches_the_reference_on_every_short_padded_string():
    """Every string of up to 8 characters over a letter pair, "/" and "=": padding anywhere, in any amount."""
    import itertools

    for length in range(9):
        for chars in itertools.product("AQ/=", repeat=length):
            value = "".join(chars)
            assert outcome(b64decode_strict, value) == outcome(reference_b64decode, value), value


def reference_split(raw_path: str) -> object:
    try:
        segments = _split_path(raw_path, trailing_slash_ok=False)
    except InvalidRequest as exc:
        return exc.message
    if segments is not None:
        # the rule before the regex: no control character in any decoded segment
        assert not any(ord(c) < 0x20 or ord(c) == 0x7F for s in segments for c in s)
    return segments


@settings(max_examples=2000, deadline=None)
@given(st.text(alphabet="ab/%0127fF\x00\x1f\x7f\x80 .", max_size=20))
def test_split_path_refuses_every_control_character(rest):
    reference_split("/v1/" + rest)
    for control in ("\x00", "\x1f", "\x7f", "%00", "%1F", "%7f", "%0A"):
        assert reference_split(f"/v1/a/{control}b") == "invalid path: empty, relative or control-character segment"
    assert reference_split("/v1/a/\x80b") == ["a", "\x80b"]


def test_requests_finding_the_mount_table_stale_together_read_it_once(start_server):
    """Every request behind the load lock used to read the table again, one after the other (a stall of
    hundreds of ms every --cache-ttl under load); now they wait for one read."""
    import asyncio

    from test_caching import StatementCounter

    server = start_server(cache_ttl=0.5)
    mounts = server.kms.mounts
    segments = ["transit", "encrypt", "vault-enc"]
    server.call(mounts.resolve(segments))

    async def together() -> list:
        await asyncio.sleep(0.6)  # the table is stale now
        return await asyncio.gather(*(mounts.resolve(segments) for _ in range(20)))

    counter = StatementCounter(server.kms.engine)
    try:
        found = server.call(together())
    finally:
        counter.close()
    assert all(mount.path == "transit" and rest == ["encrypt", "vault-enc"] for mount, rest in found), found
    reads = [s for s in counter.statements if "FROM mounts" in s]
    assert len(reads) == 1, counter.statements

    # A mount change still makes the next request read the table again, within the TTL.
    from kms_service.service.invalidation import Change, Kind

    server.kms.invalidator.publish([Change(Kind.MOUNT)])
    counter = StatementCounter(server.kms.engine)
    try:
        server.call(mounts.resolve(segments))
    finally:
        counter.close()
    assert len([s for s in counter.statements if "FROM mounts" in s]) == 1, counter.statements


def test_a_token_without_a_grant_there_is_refused_without_a_key_lookup(start_server):
    """Writes to keys/:name and encrypt/:name ask storage whether the key exists (Vault's existence check:
    create or update?). A token allowed neither there is refused before that: no query, whatever the name."""
    from datetime import timedelta

    import requests
    from test_caching import StatementCounter

    server = start_server(cache_ttl=300)
    root = server.root_token()
    admin = server.client(root).sys
    admin.create_or_update_acl_policy("metrics-only", 'path "sys/metrics" { capabilities = ["read"] }')
    admin.create_or_update_acl_policy("create-keys", 'path "transit/keys/*" { capabilities = ["create"] }')
    tokens = server.kms.tokens
    nothing = server.call(tokens.create(["metrics-only"], timedelta(hours=1)))[0]
    signer = server.call(tokens.create(["sign:vault-sign"], timedelta(hours=1)))[0]
    creator = server.call(tokens.create(["create-keys"], timedelta(hours=1)))[0]

    def post(token: str, path: str, body: dict) -> requests.Response:
        return requests.post(f"{server.url}/v1/{path}", json=body, headers={"X-Vault-Token": token}, timeout=30)

    for token in (nothing, signer):  # warm the token cache: authentication itself needs no query then
        assert post(token, "transit/keys/warm-up", {}).status_code == 403
    counter = StatementCounter(server.kms.engine)
    try:
        for i in range(20):
            for token in (nothing, signer):
                for path, body in ((f"transit/keys/k{i}", {}), (f"transit/encrypt/k{i}", {"plaintext": "AA=="})):
                    answer = post(token, path, body)
                    assert (answer.status_code, answer.json()) == (403, {"errors": ["permission denied"]})
    finally:
        counter.close()
    assert counter.statements == [], counter.statements

    # A token that may create still gets Vault's answers, which need the lookup: a new key is made, an
    # existing one needs update (403).
    assert post(creator, "transit/keys/made-by-creator", {}).status_code == 200
    assert post(creator, "transit/keys/vault-enc", {}).status_code == 403
    assert post(root, "transit/keys/vault-enc", {}).status_code == 200
    # Nothing was made by the refused requests.
    listed = requests.request("LIST", f"{server.url}/v1/transit/keys", headers={"X-Vault-Token": root}, timeout=30)
    assert not [name for name in listed.json()["data"]["keys"] if name.startswith("k")]


JSON_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),  # past 64 bits: the standard library's path
    st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=20),  # controls, non-ASCII, quotes
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.text(max_size=8), st.integers(0, 99)), inner, max_size=4),
    ),
    max_leaves=20,
)


@settings(max_examples=1500, deadline=None)
@given(JSON_VALUES)
def test_replies_are_the_bytes_the_standard_library_wrote(value):
    import json

    from kms_service.web.replies import encode

    assert encode(value) == json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


@settings(max_examples=300, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_reply_floats_read_back_as_sent(value):
    """Floats (only sys/metrics' JSON has them) may be spelled as Go spells them (1e-05 → 0.00001): the same
    number."""
    import json

    from kms_service.web.replies import encode

    assert json.loads(encode({"v": value})) == {"v": value}


def test_request_ids_are_version_4_uuids_and_unique():
    import uuid

    from kms_service.web.app import new_request_id

    ids = [new_request_id() for _ in range(20_000)]
    assert len(set(ids)) == len(ids)
    for request_id in ids[:50] + ids[-50:]:
        parsed = uuid.UUID(request_id)
        assert str(parsed) == request_id and parsed.version == 4 and parsed.variant == uuid.RFC_4122


def test_every_path_and_method_reaches_the_service(start_server):
    """The edge has no URL dispatcher: whatever the path and the method token, the service answers (Vault's
    JSON envelope and a request id), never aiohttp."""
    server = start_server()
    cases = [("GET", "/v1/sys/health"), ("GET", "/nothing/here"), ("GET", "/v1/transit/keys/a%2Fb"), ("GET", "/")]
    cases += [("LIST", "/v1/sys/health"), ("PATCH", "/v1/transit/keys"), ("BREW", "/v1/transit/keys")]
    for method, path in cases:
        answer = requests.request(method, f"{server.url}{path}", timeout=10)
        assert answer.headers["Content-Type"] == "application/json" and "X-Request-Id" in answer.headers, path
        assert answer.status_code == 200 or "errors" in answer.json(), (method, path)


def test_an_absent_item_field_is_what_parsing_nothing_gives():
    """_parse_items skips parsing for absent item fields (Field.absent): the same value as parse(None)."""
    from kms_service.web.paths import TABLE

    fields = {f for path in TABLE for f in path.item_fields if f.required is None}
    assert len(fields) > 5
    for f in fields:
        assert f.absent == f.parse(None), f.name


def test_absent_top_level_fields_are_what_parsing_nothing_gives():
    """_parse_top_level skips parsing for absent fields that are not required (Path.top_level_plan)."""
    from kms_service.web.execution import _parse_top_level
    from kms_service.web.framework import _NEEDS_PARSE
    from kms_service.web.paths import TABLE

    for path in TABLE:
        for f, absent in path.top_level_plan:
            if absent is _NEEDS_PARSE:
                assert f.required is not None
                with pytest.raises(InvalidRequest):
                    f.parse(None)
            else:
                assert absent == f.parse(None), (path.pattern, f.name)
        required = [f.name for f, absent in path.top_level_plan if absent is _NEEDS_PARSE]
        if required:  # an absent required field is still refused, with its own text
            with pytest.raises(InvalidRequest):
                _parse_top_level(path, {}, batched=False)


JSON_LEAVES = st.one_of(
    st.none(), st.booleans(), st.integers(), st.text(max_size=12), st.sampled_from(["\ud800", "x" * 40])
)
JSON_DOCUMENTS = st.dictionaries(
    st.sampled_from(["batch_input", "plaintext", "a", "\udfff"]),
    st.recursive(
        JSON_LEAVES,
        lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=3), inner, max_size=6),
        max_leaves=30,
    )
    # batch_input's shape: a list of objects of scalars (and the odd list), walked inline.
    | st.lists(
        st.dictionaries(st.text(max_size=3), JSON_LEAVES | st.lists(JSON_LEAVES, max_size=3), max_size=10),
        max_size=12,
    ),
    max_size=4,
)


@settings(max_examples=1500, deadline=None)
@given(JSON_DOCUMENTS, st.integers(2, 6), st.integers(8, 400), st.integers(2, 8))
def test_the_container_only_walk_refuses_what_the_full_walk_refuses(document, depth, string_length, entries):
    """parse_body walks only the containers when no string can be too long or hold a lone surrogate; its
    verdict is the full walk's (every string checked) on every document."""
    import json as stdlib_json

    from kms_service.web import fields

    limits = fields.JsonLimits(depth=depth, string_length=string_length, entries=entries, tokens=10_000)
    raw = stdlib_json.dumps(document).encode()

    def verdict(check):
        try:
            check()
            return None
        except InvalidRequest as exc:
            return exc.message

    full = verdict(lambda: fields._check(stdlib_json.loads(raw), 0, limits))
    assert verdict(lambda: fields.parse_body(raw, "application/json", limits)) == full


def test_acl_decisions_remembered_are_the_rules_answers_and_stay_bounded():
    from kms_service import acl as acl_module
    from kms_service.acl import ACL, PathRule, Policy

    rules = (
        PathRule("transit/encrypt/*", acl_module.Capability.UPDATE),
        PathRule("transit/encrypt/secret", acl_module.Capability.DENY),
        PathRule("transit/keys/+/config", acl_module.Capability.READ | acl_module.Capability.UPDATE),
    )
    remembering = ACL([Policy("p", rules)])
    paths = [
        f"transit/{kind}/{name}{tail}"
        for kind in ("encrypt", "keys")
        for name in ("a", "secret", "b.c")
        for tail in ("", "/", "/config")
    ]
    for _ in range(2):  # decided, then remembered
        for path in paths:
            assert remembering.capabilities(path) == ACL([Policy("p", rules)])._decide(path), path
    for i in range(acl_module.MAX_DECIDED_PATHS + 10):
        remembering.allows(f"transit/encrypt/k{i}", acl_module.Capability.UPDATE)
    assert len(remembering._decided) <= acl_module.MAX_DECIDED_PATHS


def test_routes_found_are_remembered_with_their_own_parameters():
    from kms_service.web.paths import TABLE
    from kms_service.web.routing import MAX_FOUND_ROUTES, Router

    router = Router(TABLE)
    path, params = router.find(["transit", "encrypt", "one"])
    params["name"] = "changed by a handler"
    again, params_again = router.find(["transit", "encrypt", "one"])
    assert again is path and params_again == {"name": "one"}
    assert router.find(["transit", "nothing", "here", "at", "all"]) is None
    for i in range(MAX_FOUND_ROUTES + 10):
        router.find(["transit", "encrypt", f"k{i}"])
    assert len(router._found) <= MAX_FOUND_ROUTES
    # A long path is answered, not kept: what a caller can make the router hold stays small.
    router._found.clear()
    assert router.find(["transit", "encrypt", "k" * 2000])[1] == {"name": "k" * 2000}
    assert not router._found


def test_path_splits_are_remembered_without_query_strings_and_only_when_short(start_server):
    server = start_server()
    router = server._runner.app[ROUTER_KEY_FOR_TESTS]
    for i in range(20):
        requests.get(f"{server.url}/v1/sys/health?n={i}", timeout=10)
    requests.get(f"{server.url}/v1/nothing/{'a' * 4000}", timeout=10)
    kept = [path for path, _listing in router._split]
    assert "/v1/sys/health" in kept and not any("?" in path or len(path) > 512 for path in kept), kept


# -- slow operations and large payloads off the event loop ---------------------------------------------

MESSAGE = base64.b64encode(b"m").decode()
SLOW_CASES = [
    # key type, path, the key type's method it calls, whether that runs in a worker thread
    ("rsa-2048", "sign", "sign", True),
    ("rsa-2048", "decrypt", "decrypt", True),
    ("rsa-2048", "rewrap", "decrypt", True),
    ("rsa-2048", "encrypt", "encrypt", False),  # the public key: fast
    ("rsa-2048", "verify", "verify", False),
    ("ml-dsa-44", "sign", "sign", True),
    ("ml-dsa-44", "verify", "verify", True),
    ("hybrid-ml-dsa-65-ed25519", "sign", "sign", True),
    ("hybrid-ml-dsa-65-ecdsa-p256", "verify", "verify", True),
    ("ecdsa-p384", "sign", "sign", True),
    ("ecdsa-p521", "verify", "verify", True),
    ("ecdsa-p256", "sign", "sign", False),
    ("ed25519", "verify", "verify", False),
    ("chacha20-poly1305", "encrypt", "encrypt", False),
    # A payload over 64 KiB, fast key or not.
    ("chacha20-poly1305", "encrypt-large", "encrypt", True),
]


@pytest.mark.parametrize(("type_name", "operation", "method", "off_loop"), SLOW_CASES)
def test_slow_operations_and_large_payloads_run_off_the_event_loop(
    start_server, monkeypatch, type_name, operation, method, off_loop
):
    """The key type's method itself (not a stand-in) runs in a worker thread or on the loop's thread,
    through the real HTTP path; the thread it ran on is recorded by a wrapper around it."""
    from kms_service.keytypes import KEY_TYPES

    server = start_server()
    headers = {"X-Vault-Token": server.root_token()}
    url = f"{server.url}/v1/transit"
    assert requests.post(f"{url}/keys/k", json={"type": type_name}, headers=headers).status_code in (200, 204)
    body: dict = {"plaintext": MESSAGE}
    if operation in ("decrypt", "rewrap"):
        made = requests.post(f"{url}/encrypt/k", json={"plaintext": MESSAGE}, headers=headers).json()
        body = {"ciphertext": made["data"]["ciphertext"]}
    elif operation == "sign":
        body = {"input": MESSAGE}
    elif operation == "verify":
        made = requests.post(f"{url}/sign/k", json={"input": MESSAGE}, headers=headers).json()
        body = {"input": MESSAGE, "signature": made["data"]["signature"]}
    elif operation == "encrypt-large":
        operation, body = "encrypt", {"plaintext": base64.b64encode(b"m" * 65536).decode()}
    key_type = KEY_TYPES[type_name]
    original = getattr(key_type, method)
    threads: list[int] = []

    def recorded(*args, **kwargs):
        threads.append(threading.get_ident())
        return original(*args, **kwargs)

    monkeypatch.setattr(key_type, method, recorded)
    answer = requests.post(f"{url}/{operation}/k", json=body, headers=headers)
    assert answer.status_code == 200, answer.text
    if operation == "verify":
        assert answer.json()["data"]["valid"] is True
    loop_thread = server._thread.ident
    assert threads and all((thread != loop_thread) is off_loop for thread in threads), (threads, loop_thread)


@pytest.mark.parametrize(("type_name", "off_loop"), [("rsa-2048", True), ("ecdsa-p256", False)])
def test_a_csr_signed_with_a_slow_key_is_built_off_the_event_loop(start_server, monkeypatch, type_name, off_loop):
    from kms_service import certificates

    server = start_server()
    headers = {"X-Vault-Token": server.root_token()}
    url = f"{server.url}/v1/transit"
    assert requests.post(f"{url}/keys/k", json={"type": type_name}, headers=headers).status_code in (200, 204)
    original, threads = certificates.build_csr, []

    def recorded(*args, **kwargs):
        threads.append(threading.get_ident())
        return original(*args, **kwargs)

    monkeypatch.setattr(certificates, "build_csr", recorded)
    answer = requests.post(f"{url}/keys/k/csr", json={}, headers=headers)
    assert answer.status_code == 200, answer.text
    assert "BEGIN CERTIFICATE REQUEST" in answer.json()["data"]["csr"]
    assert len(threads) == 1 and (threads[0] != server._thread.ident) is off_loop


# -- batch items: the absent item with its present fields parsed, against the field-by-field loop -------

ITEM_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-3, max_value=2**40),
    st.sampled_from(["", "QQ==", "QUJD", "bad base64!", "v1", "latest", "pkcs1v15", "oaep", "é"]),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


def _outcome_of(parse):
    try:
        items = parse()
    except InvalidRequest as exc:
        return "request refused", exc.message
    return items.values, items.errors


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_batch_items_parse_as_the_field_by_field_loop_does(data):
    from kms_service.web.execution import Items, _parse_item, _parse_items
    from kms_service.web.paths import TABLE

    path = data.draw(st.sampled_from([p for p in TABLE if p.item_plan and len(p.item_plan) > 1]))
    names = [name for _f, name, _absent in path.item_plan] + ["unknown"]
    raw_items = data.draw(
        st.lists(st.dictionaries(st.sampled_from(names), ITEM_VALUES, max_size=len(names)), min_size=1, max_size=4)
    )

    def reference():
        parsed = [_parse_item(path.item_plan, i, raw) for i, raw in enumerate(raw_items)]
        return Items([v for v, _ in parsed], [e for _, e in parsed], batched=True)

    assert _outcome_of(lambda: _parse_items(path, raw_items, False)) == _outcome_of(reference)


def test_requests_are_counted_for_the_heavy_lane_as_they_arrive_unless_their_body_is_large(start_server):
    """The heavy lane pauses only while other requests are served: the router counts each request with a
    small body or none, before anything else; a large body is the lane's own work and is not counted."""
    server = start_server()
    lane = server._runner.app[ROUTER_KEY_FOR_TESTS].heavy_lane
    headers = {"X-Vault-Token": server.root_token()}
    url = f"{server.url}/v1/transit/encrypt/vault-enc"
    before = lane.light_requests
    assert requests.get(f"{server.url}/v1/sys/health").status_code == 200
    assert requests.post(url, json={"plaintext": "QQ=="}, headers={"X-Vault-Token": "not a token"}).status_code == 403
    assert requests.post(url, json={"plaintext": "QQ=="}, headers=headers).status_code == 200
    assert lane.light_requests == before + 3
    large = {"batch_input": [{"plaintext": "QUJD" * 64}] * 300}  # over 64 KiB
    assert requests.post(url, json=large, headers=headers).status_code == 200
    assert lane.light_requests == before + 3


def reference_parse_versioned(value: str) -> tuple[int, str]:
    """The field-by-field checks alone (parse_versioned without its one-match fast path)."""
    prefix, sep, rest = value.partition(":")
    if not sep or prefix not in ("vault-kms", "vault") or not rest.startswith("v"):
        raise InvalidRequest("invalid ciphertext: no prefix")
    version_text, sep, payload = rest[1:].partition(":")
    if not sep:
        raise InvalidRequest("invalid ciphertext: wrong number of fields")
    if not version_text or version_text[0] not in "123456789" or len(version_text) > 10:
        raise InvalidRequest("invalid ciphertext: version number could not be decoded")
    if any(c not in "0123456789" for c in version_text) or int(version_text) > 2**31 - 1:
        raise InvalidRequest("invalid ciphertext: version number could not be decoded")
    return int(version_text), payload


VERSIONED_ISH = st.builds(
    lambda prefix, version, rest: prefix + version + rest,
    st.sampled_from(["vault-kms:v", "vault:v", "vault:", "vault-km:v", "vaultv", "Vault:v", "", "vault-kms:v:"]),
    st.one_of(
        st.integers(min_value=0, max_value=2**31 + 5).map(str),
        st.sampled_from(["2147483647", "2147483648", "9999999999", "01", "1٣", "+1", " 1", "1\n", "12345678901"]),
        st.text(alphabet="0123456789:v٣\n", max_size=12),
    ),
    st.one_of(st.text(max_size=10), st.sampled_from([":abc", ":a:b", "", ":", ":\n", "abc"])),
)


@settings(max_examples=3000, deadline=None)
@given(st.one_of(VERSIONED_ISH, st.text(max_size=20)))
def test_parse_versioned_matches_the_field_by_field_checks(value):
    """The one-match fast path accepts exactly what the checks accept, with the same version and payload;
    what it refuses gets the checks' error."""
    from kms_service.keyring import parse_versioned, version_of

    def parsed(parse) -> tuple[str, object]:
        try:
            return "ok", tuple(parse(value))
        except InvalidRequest as exc:
            return "error", exc.message

    expected = parsed(reference_parse_versioned)
    assert parsed(lambda v: parse_versioned(v, "ciphertext")) == expected
    version = parsed(lambda v: (version_of(v, "ciphertext"),))
    assert version == (expected if expected[0] == "error" else ("ok", expected[1][:1]))
