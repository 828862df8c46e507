"""What bench/chaos.py runs and breaks: a PostgreSQL cluster of its own (initdb, pg_ctl: never the shared
server), ``kms-service serve`` nodes started as an operator starts them, and the hostile clients (idle and
slowloris sockets, oversized, malformed, compressed and badly encoded bodies)."""

from __future__ import annotations

import asyncio
import base64
import gzip
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

KMS = [sys.executable, "-m", "kms_service"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Postgres:
    """A cluster in a temporary directory on a free port; ``restart`` stops it at once (``-m immediate``: as a
    crash does) and starts it again."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="kms-chaos-pg-"))
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres")
        self.port = free_port()
        self._pg(["initdb", "-D", str(self.dir / "data"), "-U", "postgres", "--auth=trust"])

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _pg(self, args: list[str], check: bool = True) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run(prefix + args, check=check, capture_output=True, timeout=120)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c max_connections=200"
        log = str(self.dir / "log")
        self._pg(["pg_ctl", "-D", str(self.dir / "data"), "-o", options, "-w", "start", "-l", log])

    def stop(self) -> None:
        self._pg(["pg_ctl", "-D", str(self.dir / "data"), "-m", "immediate", "-w", "stop"])

    def remove(self) -> None:
        self._pg(["pg_ctl", "-D", str(self.dir / "data"), "-m", "immediate", "stop"], check=False)
        shutil.rmtree(self.dir, ignore_errors=True)


@dataclass
class Node:
    """One ``kms-service serve`` process on its own port (kept across restarts), its output in a log file,
    its audit log in a file of its own (the same file across restarts, as an operator would run it)."""

    name: str
    env: dict[str, str]
    workdir: Path
    args: list[str]
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def audit_file(self) -> Path:
        return self.workdir / f"audit-{self.name}.jsonl"

    @property
    def log_file(self) -> Path:
        return self.workdir / f"node-{self.name}.log"

    def launch(self) -> None:
        command = [*KMS, "serve", "--port", str(self.port), "--audit-file", str(self.audit_file), *self.args]
        with self.log_file.open("a") as log:
            log.write(f"--- start {self.starts + 1} ---\n")
            log.flush()
            self.proc = subprocess.Popen(command, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.starts += 1

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush, connections cut as by a crash."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> int | None:
        """SIGTERM and wait (a clean shutdown closes the audit chains); the exit status."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None

    def rss_kib(self) -> int | None:
        try:
            status = Path(f"/proc/{self.proc.pid}/status").read_text()
        except (OSError, AttributeError):
            return None
        return next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), None)


async def healthy(session: aiohttp.ClientSession, node: Node) -> bool:
    """The node answers its health check with 200 (its database reachable)."""
    try:
        async with session.get(f"{node.url}/v1/sys/health", timeout=aiohttp.ClientTimeout(total=2)) as reply:
            return reply.status == 200 and (await reply.json()).get("database", "available") == "available"
    except (TimeoutError, aiohttp.ClientError, ValueError):
        return False


async def wait_healthy(session: aiohttp.ClientSession, nodes: list[Node], limit: float = 90.0) -> float:
    """Poll until every node is healthy; the seconds it took."""
    started = time.monotonic()
    while True:
        for node in nodes:
            if node.proc is not None and node.proc.poll() is not None:
                tail = node.log_file.read_text()[-3000:]
                raise RuntimeError(f"node {node.name} exited ({node.proc.returncode}):\n{tail}")
        if all([await healthy(session, node) for node in nodes]):
            return time.monotonic() - started
        if time.monotonic() - started > limit:
            raise RuntimeError(f"nodes {[n.name for n in nodes]} not healthy within {limit:.0f} s")
        await asyncio.sleep(0.1)


# -- hostile sockets --------------------------------------------------------------------------------------


@dataclass
class SocketResult:
    kind: str
    node: str
    closed_after: float | None  # seconds from the last byte sent to the server closing (None: still open)


async def _until_closed(reader: asyncio.StreamReader, limit: float) -> bool:
    """Read whatever the server sends until it closes the connection; False if it is still open at ``limit``."""
    try:
        async with asyncio.timeout(limit):
            while await reader.read(4096):
                pass
        return True
    except TimeoutError:
        return False
    except ConnectionError:
        return True


async def idle_keepalive(node: Node, token: str, limit: float) -> SocketResult:
    """One honest request on a kept-alive connection, then silence: the idle timeout must close it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
    try:
        writer.write(f"GET /v1/sys/health HTTP/1.1\r\nHost: chaos\r\nX-Vault-Token: {token}\r\n\r\n".encode())
        await writer.drain()
        await reader.readuntil(b"\r\n\r\n")
        sent = time.monotonic()
        closed = await _until_closed(reader, limit)
        return SocketResult("idle keep-alive", node.name, time.monotonic() - sent if closed else None)
    finally:
        writer.close()


async def slowloris(node: Node, limit: float, every: float = 0.5) -> SocketResult:
    """Headers sent a line at a time, never finished: the header read timeout must close the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
    started = time.monotonic()
    try:
        writer.write(b"POST /v1/transit/encrypt/chaos HTTP/1.1\r\nHost: chaos\r\n")
        await writer.drain()
        closing = asyncio.ensure_future(_until_closed(reader, limit))
        n = 0
        while not closing.done() and time.monotonic() - started < limit:
            try:
                writer.write(f"X-Slow-{n}: {'a' * 8}\r\n".encode())
                await writer.drain()
            except ConnectionError:
                break
            n += 1
            await asyncio.wait([closing], timeout=every)
        closed = await closing
        return SocketResult("slowloris headers", node.name, time.monotonic() - started if closed else None)
    finally:
        writer.close()


async def slow_body(node: Node, token: str, limit: float, every: float = 0.5) -> SocketResult:
    """Headers complete, the body a byte at a time: the request read timeout must close the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
    started = time.monotonic()
    try:
        writer.write(
            "POST /v1/transit/encrypt/chaos HTTP/1.1\r\nHost: chaos\r\nContent-Type: application/json\r\n"
            f"X-Vault-Token: {token}\r\nContent-Length: 100000\r\n\r\n".encode()
        )
        await writer.drain()
        closing = asyncio.ensure_future(_until_closed(reader, limit))
        while not closing.done() and time.monotonic() - started < limit:
            try:
                writer.write(b" ")
                await writer.drain()
            except ConnectionError:
                break
            await asyncio.wait([closing], timeout=every)
        closed = await closing
        return SocketResult("slow body", node.name, time.monotonic() - started if closed else None)
    finally:
        writer.close()


# -- hostile bodies ---------------------------------------------------------------------------------------


def _gzip_bomb(size: int) -> bytes:
    """A JSON body that is ``size`` bytes once decompressed, a few KiB on the wire."""
    inner = b'{"plaintext": "' + b"A" * (size - 17) + b'"}'
    return gzip.compress(inner, compresslevel=9)


@dataclass
class HostileBody:
    name: str
    path: str
    body: bytes
    headers: dict[str, str]
    expect: tuple[int, ...]  # acceptable statuses (all 4xx)


def hostile_bodies(max_request_bytes: int) -> list[HostileBody]:
    json_type = {"Content-Type": "application/json"}
    gzipped = {**json_type, "Content-Encoding": "gzip"}
    deep = b'{"plaintext": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    # Short strings: past the size limit without tripping the JSON string-length limit first.
    oversized = json.dumps({"plaintext": "QUFB", "padding": ["QUFB"] * (max_request_bytes // 7)}).encode()
    return [
        HostileBody("oversized body", "transit/keys/chaos-hostile/config", oversized, json_type, (413,)),
        HostileBody("malformed JSON", "transit/encrypt/chaos-hostile", b'{"plaintext": "QUFB', json_type, (400,)),
        HostileBody("JSON nested 5000 deep", "transit/encrypt/chaos-hostile", deep, json_type, (400,)),
        HostileBody(
            "bad base64",
            "transit/encrypt/chaos-hostile",
            json.dumps({"plaintext": "not*base64!"}).encode(),
            json_type,
            (400,),
        ),
        HostileBody(
            "bad base64 in a batch",
            "transit/encrypt/chaos-hostile",
            json.dumps({"batch_input": [{"plaintext": "QUFB"}, {"plaintext": "%%%"}]}).encode(),
            json_type,
            (400,),
        ),
        HostileBody(
            "gzip bomb (64x the size limit inflated)",
            "transit/encrypt/chaos-hostile",
            _gzip_bomb(64 * max_request_bytes),
            gzipped,
            (400, 413, 415),
        ),
        HostileBody("gzip named, plain body", "transit/encrypt/chaos-hostile", b"{}", gzipped, (400, 415)),
        HostileBody(
            "ciphertext not of this service",
            "transit/decrypt/chaos-hostile",
            json.dumps({"ciphertext": "vault:v1:" + base64.b64encode(b"x" * 40).decode()}).encode(),
            json_type,
            (400,),
        ),
    ]


@dataclass
class BodyResult:
    name: str
    node: str
    status: int | None  # None: the connection failed
    error: str
    ok: bool


async def send_hostile(session: aiohttp.ClientSession, node: Node, token: str, hostile: HostileBody) -> BodyResult:
    headers = {**hostile.headers, "X-Vault-Token": token}
    try:
        async with session.post(
            f"{node.url}/v1/{hostile.path}",
            data=io.BytesIO(hostile.body),  # raw bytes past a size make aiohttp warn (an error under pytest)
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=60),
        ) as reply:
            text = await reply.text()
            try:
                answer = json.loads(text)
                # A batch refused item by item: Vault's 400 with each item's error in batch_results.
                items = (answer.get("data") or {}).get("batch_results") or []
                errors = answer.get("errors") or [item["error"] for item in items if item.get("error")]
            except (ValueError, AttributeError, KeyError, TypeError):
                errors = [text[:120]]
            error = "; ".join(str(e) for e in errors)[:160]
            ok = reply.status in hostile.expect and bool(errors)
            return BodyResult(hostile.name, node.name, reply.status, error, ok)
    except (TimeoutError, aiohttp.ClientError) as exc:
        # A refusal that closes the connection before the whole body is sent also counts as refused, if the
        # answer (413) came first; a connection error alone is not an answer.
        return BodyResult(hostile.name, node.name, None, f"{type(exc).__name__}: {exc}"[:160], False)


async def malformed_chunked(node: Node, token: str) -> BodyResult:
    """A chunked body whose second chunk size is not hexadecimal, sent once the node reads the body (after its
    interim 100): a 400 that says Connection: close."""
    name = "malformed chunked body"
    reader, writer = await asyncio.open_connection("127.0.0.1", node.port)
    try:
        writer.write(
            "POST /v1/transit/encrypt/chaos-hostile HTTP/1.1\r\nHost: chaos\r\nContent-Type: application/json\r\n"
            f"X-Vault-Token: {token}\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n".encode()
        )
        await writer.drain()
        async with asyncio.timeout(30):
            interim = await reader.readuntil(b"\r\n\r\n")
            if not interim.startswith(b"HTTP/1.1 100 "):
                return BodyResult(name, node.name, None, f"no interim 100: {interim[:60]!r}", False)
            writer.write(b'4\r\n{"pl\r\nzz\r\naintext": 1}\r\n0\r\n\r\n')
            await writer.drain()
            answer = await reader.read()  # to the end: the node closes the connection
    except (OSError, TimeoutError, asyncio.IncompleteReadError) as exc:
        return BodyResult(name, node.name, None, f"{type(exc).__name__}: {exc}"[:160], False)
    finally:
        writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1]) if lines and len(lines[0].split()) > 1 else None
    closes = b"connection: close" in [line.lower() for line in lines[1:]]
    try:
        error = "; ".join(json.loads(body).get("errors") or [])
    except ValueError:
        error = body[:120].decode(errors="replace")
    ok = status == 400 and closes and bool(error)
    return BodyResult(name, node.name, status, error + ("" if closes else " (no Connection: close)"), ok)
