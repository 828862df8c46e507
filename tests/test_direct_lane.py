"""The direct lane (kms_service/web/direct.py): requests that arrive whole on a kept-alive connection are
answered without aiohttp's request objects. A client must not be able to tell the lanes apart: same status,
headers and body; pipelined requests answered in order whichever lane each takes; keep-alive, idle timeout
and closing as before. Driven over raw sockets, so which lane answers is under the test's control (a request
behind a HEAD in the same write goes through aiohttp, as does a body that arrives in pieces)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
import time

import pytest

# The HTTP surface: the database plays no part here (tests of storage run on both).
pytestmark = pytest.mark.sqlite_only

PLAINTEXT = base64.b64encode(b"the direct lane").decode()


class Connection:
    """One HTTP/1.1 connection, read response by response (pipelining-safe: one buffer)."""

    def __init__(self, server) -> None:
        host, port = server.url.removeprefix("http://").split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        self.buffer = b""

    def send(self, *requests: bytes) -> None:
        self.sock.sendall(b"".join(requests))

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError("closed by the server")
        self.buffer += data

    def response(self, head_only: bool = False) -> tuple[str, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buffer:
            self._fill()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        status, *lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines:
            name, value = line.split(":", 1)
            headers[name.strip()] = value.strip()
        length = 0 if head_only else int(headers.get("Content-Length", "0"))
        while len(self.buffer) < length:
            self._fill()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return status, headers, body

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def health(self, token: str) -> None:
        """One request answered, so the connection's aiohttp task has started and waits."""
        self.send(request("GET", "sys/health", token))
        self.response()


def request(method: str, path: str, token: str, body: dict | None = None, **headers: str) -> bytes:
    data = json.dumps(body).encode() if body is not None else b""
    lines = [f"{method} /v1/{path} HTTP/1.1", "Host: kms", f"X-Vault-Token: {token}"]
    lines += [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    if body is not None or method in ("POST", "PUT"):
        lines += ["Content-Type: application/json", f"Content-Length: {len(data)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + data


def comparable(response: tuple[str, dict[str, str], bytes]) -> tuple[str, list[tuple[str, str]], object]:
    """What must be equal on both lanes: status, headers in order (not the Date's and request id's
    values), and the body (without its request id)."""
    status, headers, body = response
    names = [(name, "" if name in ("Date", "X-Request-Id") else value) for name, value in headers.items()]
    try:
        document = json.loads(body) if body else None
    except ValueError:
        document = body
    if isinstance(document, dict):
        document.pop("request_id", None)
        document.pop("server_time_utc", None)  # sys/health: the clock moves
        if isinstance(document.get("data"), dict):
            document["data"].pop("ciphertext", None)  # a fresh nonce each time
    return status, names, document


def direct_answers(server) -> int:
    return server._runner.server.direct_answers


@pytest.fixture
def root(server) -> str:
    token = server.root_token()
    client = server.client(token)
    client.secrets.transit.create_key("lane-key", key_type="chacha20-poly1305")
    return token


CASES = {
    "encrypt 200": ("POST", "transit/encrypt/lane-key", {"plaintext": PLAINTEXT}, {}),
    "encrypt, bad base64 400": ("POST", "transit/encrypt/lane-key", {"plaintext": "not base64!"}, {}),
    "unknown key 400": ("POST", "transit/decrypt/absent-key", {"ciphertext": "vault:v1:AAAA"}, {}),
    "read key 200": ("GET", "transit/keys/lane-key", None, {}),
    "config 200": ("POST", "transit/keys/lane-key/config", {"deletion_allowed": False}, {}),
    "policy write 204": ("POST", "sys/policies/acl/lane-policy", {"policy": 'path "x" {capabilities = ["read"]}'}, {}),
    "unknown path 404": ("GET", "transit/nothing/here/at/all", None, {}),
    "method 405": ("DELETE", "transit/encrypt/lane-key", None, {}),
    "list with ?list=true": ("GET", "transit/keys?list=true", None, {}),
    "health (bare reply)": ("GET", "sys/health", None, {}),
    "metrics (text)": ("GET", "sys/metrics?format=prometheus", None, {}),
    "malformed JSON 400": ("POST", "transit/encrypt/lane-key", None, {}),
}


@pytest.mark.parametrize("case", CASES)
def test_both_lanes_give_the_same_answer(server, root, case):
    method, path, body, headers = CASES[case]
    raw = request(method, path, root, body, **headers)
    if case == "malformed JSON 400":
        raw = raw.replace(b"Content-Length: 0", b"Content-Length: 5") + b"{bad}"
    with Connection(server) as conn:
        before = direct_answers(server)
        # Behind a HEAD (never direct) in the same write: aiohttp's lane answers both, in order.
        conn.send(request("HEAD", "sys/health", root), raw)
        conn.response(head_only=True)
        first = conn.response()
        assert direct_answers(server) == before
        time.sleep(0.05)  # aiohttp's task goes back to waiting for the next request
        conn.send(raw)
        second = conn.response()
        assert direct_answers(server) == before + 1
    if case.startswith("metrics"):  # the counts move between the two scrapes; the shape must not
        assert first[0] == second[0] and list(first[1]) == list(second[1])
        return
    assert comparable(first) == comparable(second)
    assert first[0].split()[1] == case.rsplit(" ", 1)[-1] or not case[-3:].isdigit()


@pytest.mark.parametrize("event_loop", ["asyncio", "uvloop"])
def test_pipelined_requests_are_answered_in_order_across_lanes(start_server, event_loop):
    server = start_server(uvloop=event_loop == "uvloop")
    root = server.root_token()
    server.client(root).secrets.transit.create_key("lane-key", key_type="chacha20-poly1305")
    with Connection(server) as conn:
        conn.health(root)
        before = direct_answers(server)
        plaintexts = [base64.b64encode(f"item {i}".encode()).decode() for i in range(6)]
        batch = [request("POST", "transit/encrypt/lane-key", root, {"plaintext": p}) for p in plaintexts]
        # HEAD and Connection-less HTTP/1.0 are aiohttp's; a request behind them goes back to the direct lane.
        batch.insert(2, request("HEAD", "sys/health", root))
        batch.insert(4, request("GET", "transit/keys/lane-key", root))
        conn.send(*batch)
        answers = []
        for raw in batch:
            answers.append(conn.response(head_only=raw.startswith(b"HEAD")))
        ciphertexts = [json.loads(body)["data"]["ciphertext"] for status, _, body in answers if b"ciphertext" in body]
        assert len(ciphertexts) == len(plaintexts)
        assert json.loads(answers[4][2])["data"]["name"] == "lane-key"
        assert answers[2][0].startswith("HTTP/1.1 200") and answers[2][2] == b""
        assert direct_answers(server) > before
        # In order: each ciphertext decrypts to the plaintext sent in its place.
        decrypts = [request("POST", "transit/decrypt/lane-key", root, {"ciphertext": c}) for c in ciphertexts]
        conn.send(*decrypts)
        got = [json.loads(conn.response()[2])["data"]["plaintext"] for _ in decrypts]
        assert got == plaintexts


def test_a_body_still_arriving_goes_through_aiohttp_and_the_connection_goes_on(server, root):
    with Connection(server) as conn:
        conn.health(root)
        conn.health(root)
        before = direct_answers(server)
        raw = request("POST", "transit/encrypt/lane-key", root, {"plaintext": PLAINTEXT})
        head, body = raw.split(b"\r\n\r\n", 1)
        conn.send(head + b"\r\n\r\n" + body[:5])
        time.sleep(0.2)
        conn.send(body[5:])
        status, _, answer = conn.response()
        assert status.startswith("HTTP/1.1 200"), answer
        assert direct_answers(server) == before
        time.sleep(0.05)
        conn.send(raw)  # whole again: the direct lane again
        assert conn.response()[0].startswith("HTTP/1.1 200")
        assert direct_answers(server) == before + 1


def test_connection_close_is_honoured_and_http_1_0_is_aiohttps(server, root):
    with Connection(server) as conn:
        conn.health(root)
        before = direct_answers(server)
        conn.send(request("GET", "sys/health", root, Connection="close"))
        status, headers, _ = conn.response()
        assert status.startswith("HTTP/1.1 200") and headers.get("Connection") == "close"
        with pytest.raises(ConnectionError):
            conn._fill()
        assert direct_answers(server) == before
    with Connection(server) as conn:
        conn.send(request("GET", "sys/health", root).replace(b"HTTP/1.1", b"HTTP/1.0"))
        assert conn.response()[0].startswith("HTTP/1.0 200")


def test_an_idle_connection_is_closed_after_direct_answers_too(start_server):
    quick = start_server(idle_timeout=1.0)
    token = quick.root_token()
    with Connection(quick) as conn:
        for _ in range(3):
            conn.health(token)
        assert direct_answers(quick) >= 2
        started = time.monotonic()
        conn.sock.settimeout(5)
        with pytest.raises(ConnectionError):
            conn._fill()
        assert 0.5 < time.monotonic() - started < 3.5


def test_a_busy_direct_connection_is_not_closed_as_idle(start_server):
    quick = start_server(idle_timeout=1.0)
    token = quick.root_token()
    with Connection(quick) as conn:
        conn.health(token)
        until = time.monotonic() + 2.5  # longer than the idle timeout, never idle for long
        while time.monotonic() < until:
            conn.send(request("GET", "sys/health", token))
            assert conn.response()[0].startswith("HTTP/1.1 200")
            time.sleep(0.1)


def test_a_client_gone_before_its_direct_answer_harms_no_one(server, root):
    for _ in range(20):
        conn = Connection(server)
        conn.health(root)
        conn.send(*[request("POST", "transit/encrypt/lane-key", root, {"plaintext": PLAINTEXT})] * 5)
        conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        conn.close()  # a reset, with the answers unread
    client = server.client(root)
    assert client.secrets.transit.encrypt_data("lane-key", PLAINTEXT)["data"]["ciphertext"]


@pytest.mark.parametrize(("expect", "status"), [("100-continue", "200"), ("something-else", "417")])
def test_an_expect_header_is_aiohttps_on_both_lanes(server, root, expect, status):
    """aiohttp answers Expect: 100-continue with an interim 100 and any other expectation with 417 (the
    handler never runs); the direct lane leaves such requests to it."""
    with Connection(server) as conn:
        conn.health(root)
        before = direct_answers(server)
        conn.send(request("POST", "transit/encrypt/lane-key", root, {"plaintext": PLAINTEXT}, Expect=expect))
        first = conn.response()
        if first[0].startswith("HTTP/1.1 100"):
            first = conn.response()
        assert first[0].split()[1] == status, first
        assert direct_answers(server) == before


def test_a_request_begun_behind_complete_ones_in_one_read_gets_the_header_timeout(start_server):
    quick = start_server(header_read_timeout=1.0, request_read_timeout=2.0, idle_timeout=20.0)
    token = quick.root_token()
    quick.client(token).secrets.transit.create_key("lane-key", key_type="chacha20-poly1305")
    encrypt = request("POST", "transit/encrypt/lane-key", token, {"plaintext": PLAINTEXT})
    with Connection(quick) as conn:
        conn.health(token)
        conn.send(encrypt * 3 + b"POST /v1/transit/encrypt/lane-key HTTP/1.1\r\nHost: x\r\n")  # then nothing
        for _ in range(3):
            assert conn.response()[0].startswith("HTTP/1.1 200")
        started = time.monotonic()
        conn.sock.settimeout(10)
        with pytest.raises(ConnectionError):
            conn._fill()
        assert time.monotonic() - started < 3.0  # the header timeout, not the idle one (20 s)


def test_a_connection_idle_after_a_request_with_a_body_waits_for_the_idle_timeout(start_server):
    quick = start_server(header_read_timeout=1.0, request_read_timeout=2.0, idle_timeout=3.0)
    token = quick.root_token()
    quick.client(token).secrets.transit.create_key("lane-key", key_type="chacha20-poly1305")
    with Connection(quick) as conn:
        conn.health(token)
        conn.send(request("POST", "transit/encrypt/lane-key", token, {"plaintext": PLAINTEXT}))
        assert conn.response()[0].startswith("HTTP/1.1 200")
        started = time.monotonic()
        conn.sock.settimeout(10)
        with pytest.raises(ConnectionError):
            conn._fill()
        assert 2.5 < time.monotonic() - started < 6.0  # idle: not the 1 s header timeout


@pytest.mark.parametrize("event_loop", ["asyncio", "uvloop"])
def test_a_request_read_while_aiohttp_answers_the_one_before_waits_its_turn(start_server, event_loop):
    """The first request's body comes in pieces (aiohttp's lane); the second is read with the rest of it,
    while aiohttp's task is still answering the first. The direct lane takes the second out of aiohttp's
    queue only to give it back: aiohttp answers both, in order."""
    quick = start_server(uvloop=event_loop == "uvloop")
    token = quick.root_token()
    quick.client(token).secrets.transit.create_key("lane-key", key_type="chacha20-poly1305")
    plaintexts = [base64.b64encode(f"turn {i}".encode()).decode() for i in range(2)]
    first, second = (request("POST", "transit/encrypt/lane-key", token, {"plaintext": p}) for p in plaintexts)
    head, body = first.split(b"\r\n\r\n", 1)
    with Connection(quick) as conn:
        conn.health(token)
        before = direct_answers(quick)
        conn.send(head + b"\r\n\r\n" + body[:5])
        time.sleep(0.2)
        conn.send(body[5:] + second)
        ciphertexts = [json.loads(conn.response()[2])["data"]["ciphertext"] for _ in range(2)]
        assert direct_answers(quick) == before
        decrypts = [request("POST", "transit/decrypt/lane-key", token, {"ciphertext": c}) for c in ciphertexts]
        conn.send(*decrypts)
        assert [json.loads(conn.response()[2])["data"]["plaintext"] for _ in decrypts] == plaintexts


def test_a_request_read_before_aiohttps_task_runs_is_answered_directly(start_server):
    """Under uvloop (``serve``'s loop) a new connection's first request is read before its aiohttp task
    first runs. It is the direct lane's: the run holds it until the task has parked. (The next request read
    before the task is back from an answer: the test after the flow-control one.)"""
    quick = start_server(uvloop=True)
    token = quick.root_token()
    quick.client(token).secrets.transit.create_key("lane-key", key_type="chacha20-poly1305")
    encrypt = request("POST", "transit/encrypt/lane-key", token, {"plaintext": PLAINTEXT})
    before = direct_answers(quick)
    for _ in range(20):
        with Connection(quick) as conn:
            conn.send(encrypt)  # at once, on a new connection
            assert conn.response()[0].startswith("HTTP/1.1 200")
            conn.send(encrypt, encrypt)
            assert all(conn.response()[0].startswith("HTTP/1.1 200") for _ in range(2))
    assert direct_answers(quick) == before + 60


class _Transport(asyncio.Transport):
    """The socket's side of a connection, kept in memory: what the protocol writes, and whether it paused
    reading. (The protocol, its parser and the app are the real ones.)"""

    def __init__(self, expected_answers: int) -> None:
        super().__init__()
        self.written = bytearray()
        self.paused = self.closed = False
        self.expected_answers = expected_answers
        self.all_answered = asyncio.Event()

    def answers(self) -> int:
        return self.written.count(b"HTTP/1.1 200 OK")

    def write(self, data: bytes) -> None:
        self.written += data
        if self.answers() >= self.expected_answers:
            self.all_answered.set()

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        self.paused = True

    def resume_reading(self) -> None:
        self.paused = False

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("127.0.0.1", 40000) if name == "peername" else default


def test_requests_held_for_the_lane_count_toward_aiohttps_flow_control(start_server):
    """uvloop reads a socket up to 32 times in one turn, so several reads can arrive while the lane holds
    requests out of aiohttp's queue (a new connection's aiohttp task has not run yet). aiohttp's parser stops
    at 32 unconsumed requests and goes on only when a paused transport is resumed: the held ones must pause
    it, or the requests past the 32nd are never parsed (the client waits, then the header timeout closes the
    connection). Two reads in one step here, 20 requests each."""
    quick = start_server()
    token = quick.root_token()
    quick.client(token).secrets.transit.create_key("lane-key", key_type="chacha20-poly1305")
    encrypt = request("POST", "transit/encrypt/lane-key", token, {"plaintext": PLAINTEXT})

    async def two_reads_then_answers() -> tuple[int, bool]:
        protocol = quick._runner.server()
        transport = _Transport(expected_answers=40)
        protocol.connection_made(transport)
        protocol.data_received(encrypt * 20)
        # The state under test (aiohttp's task created, not yet run: Python 3.11; aiohttp starts it eagerly
        # on 3.12 and later, where this test needs another way in).
        assert protocol._held is not None
        protocol.data_received(encrypt * 20)
        paused = transport.paused
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(transport.all_answered.wait(), 10)
        protocol.connection_lost(None)
        return transport.answers(), paused

    answered, paused = quick.call(two_reads_then_answers())
    assert paused  # 40 unconsumed requests, 32 at most: reading paused
    assert answered == 40


def test_a_request_read_before_aiohttps_task_is_back_from_its_answer_is_answered_directly(start_server):
    """The order uvloop gives (sockets read before the callbacks that wake tasks), made on asyncio's loop:
    the next request is read in the same turn as aiohttp's answer to a HEAD is written, before aiohttp's
    task has woken from it. The lane takes it (held until aiohttp's task has parked), after the HEAD's answer."""
    quick = start_server()
    token = quick.root_token()
    quick.client(token).secrets.transit.create_key("lane-key", key_type="chacha20-poly1305")
    head = request("HEAD", "sys/health", token)
    encrypt = request("POST", "transit/encrypt/lane-key", token, {"plaintext": PLAINTEXT})

    class ReadsOnAnswer(_Transport):
        def write(self, data: bytes) -> None:
            super().write(data)
            if self.answers() == 1 and not self.sent:  # the HEAD's answer: the client's next request is in
                self.sent = True
                asyncio.get_running_loop().call_soon(self.read_next)

        def read_next(self) -> None:
            self.between = protocol._waiter is None and not protocol._messages  # the state under test
            protocol.data_received(encrypt)

    async def exchange() -> tuple[bytes, int]:
        nonlocal protocol
        protocol = quick._runner.server()
        transport = ReadsOnAnswer(expected_answers=2)
        transport.sent = transport.between = False
        protocol.connection_made(transport)
        await asyncio.sleep(0)  # aiohttp's task starts and parks
        before = direct_answers(quick)
        protocol.data_received(head)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(transport.all_answered.wait(), 10)
        protocol.connection_lost(None)
        assert transport.between  # aiohttp's task had not woken from its answer
        return bytes(transport.written), direct_answers(quick) - before

    protocol = None
    written, direct = quick.call(exchange())
    first, second = written.split(b"HTTP/1.1 200 OK")[1:]
    assert b"ciphertext" not in first and b"vault" in second  # the HEAD's answer, then the encrypt's
    assert direct == 1
