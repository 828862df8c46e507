"""The honest load of bench/chaos.py: clients doing every crypto operation and key change through two nodes,
recording every attempt (when, which node, what came back) and everything a node acknowledged."""

from __future__ import annotations

import asyncio
import base64
import os
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp

# A connection-level failure: the node is gone (killed) or went away mid-request.
CONNECTION_ERRORS = (aiohttp.ClientConnectionError, asyncio.TimeoutError, ConnectionError)


@dataclass
class Attempt:
    op: str
    node: str
    started: float
    ended: float
    status: int | None  # None: no HTTP answer (connection refused, reset, timed out)
    error: str = ""


@dataclass
class Acknowledged:
    """What the nodes answered 2xx to: each must still hold afterwards, on both nodes."""

    ciphertexts: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # key → (ciphertext, plaintext)
    signatures: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # key → (input, signature)
    hmacs: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # key → (input, hmac)
    rotations: Counter = field(default_factory=Counter)  # key → rotations answered 2xx
    unsure_rotations: Counter = field(default_factory=Counter)  # key → rotations answered neither 2xx nor 4xx
    trimmed: dict[str, int] = field(default_factory=dict)  # key → min_available_version acknowledged
    keys: list[str] = field(default_factory=list)  # keys acknowledged created

    def count(self) -> int:
        items = (self.ciphertexts, self.signatures, self.hmacs)
        changes = sum(self.rotations.values()) + len(self.trimmed) + len(self.keys)
        return sum(len(v) for group in items for v in group.values()) + changes


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class Cluster:
    """The nodes as the clients see them: a URL per name, and one session for everyone."""

    def __init__(self, urls: dict[str, str], token: str, session: aiohttp.ClientSession) -> None:
        self.urls = urls
        self.token = token
        self.session = session
        self.attempts: list[Attempt] = []
        self.acks = Acknowledged()
        self.wrong: list[str] = []  # answers that were 2xx but wrong (a decrypt giving another plaintext)
        self.refused: list[str] = []  # honest requests answered 4xx

    async def request(self, op: str, node: str, method: str, path: str, body: Any = None) -> tuple[int | None, Any]:
        started = time.monotonic()
        try:
            async with self.session.request(
                method,
                f"{self.urls[node]}/v1/{path}",
                json=body,
                headers={"X-Vault-Token": self.token},
                timeout=aiohttp.ClientTimeout(total=30),
            ) as reply:
                status = reply.status
                data = await reply.json(content_type=None) if status != 204 else {}
        except CONNECTION_ERRORS as exc:
            error = f"{type(exc).__name__}: {exc}"[:200]
            self.attempts.append(Attempt(op, node, started, time.monotonic(), None, error))
            return None, None
        error = "; ".join(data.get("errors") or [])[:200] if isinstance(data, dict) and status >= 400 else ""
        self.attempts.append(Attempt(op, node, started, time.monotonic(), status, error))
        return status, data

    async def call(
        self, op: str, first: str, method: str, path: str, body: Any = None, *, write: bool = False, patience=20.0
    ) -> tuple[bool | None, Any]:
        """(True, data) once a node answers 2xx; (False, None) on a 4xx (recorded as refused); (None, None)
        when no node answered 2xx within ``patience`` seconds. A connection failure goes on to the other
        node; a 5xx (a database outage) is asked again after a pause. ``write``: a change that is not asked
        again once a node may have made it (a connection cut or a 5xx: its outcome is unknown)."""
        order = [first] + [n for n in self.urls if n != first]
        deadline = time.monotonic() + patience
        turn = 0
        while time.monotonic() < deadline:
            node = order[turn % len(order)]
            status, data = await self.request(op, node, method, path, body)
            if status is not None and 200 <= status < 300:
                return True, data
            if status is not None and 400 <= status < 500:
                self.refused.append(f"{op} on {node}: {status} {self.attempts[-1].error}")
                return False, None
            if write:
                return None, None
            if status is None:
                turn += 1
            else:
                await asyncio.sleep(0.25)
        return None, None


class Client:
    """One client: its own keys (so their versions can be checked), every operation in turn."""

    OPS = ("encrypt", "decrypt", "batch", "rewrap", "sign", "hmac", "datakey", "config", "rotate", "trim")
    WEIGHTS = (6, 4, 2, 2, 3, 3, 1, 1, 1, 0.3)

    def __init__(self, number: int, cluster: Cluster, stop: asyncio.Event) -> None:
        self.n = number
        self.cluster = cluster
        self.stop = stop
        self.rng = random.Random(number)
        self.nodes = list(cluster.urls)
        self.enc = f"chaos-{number}-enc"
        self.sign_key = f"chaos-{number}-sign"
        self.scratch = 0
        self.deletion_allowed = False

    @property
    def node(self) -> str:
        return self.rng.choice(self.nodes)

    async def create(self, name: str, key_type: str) -> bool:
        ok, _ = await self.cluster.call("create", self.node, "POST", f"transit/keys/{name}", {"type": key_type})
        if ok:
            self.cluster.acks.keys.append(name)
        return bool(ok)

    async def run(self) -> None:
        while not await self.create(self.enc, "aes256-gcm96") or not await self.create(self.sign_key, "ed25519"):
            if self.stop.is_set():
                return
        while not self.stop.is_set():
            op = self.rng.choices(self.OPS, self.WEIGHTS)[0]
            await getattr(self, op)()

    def plaintext(self) -> str:
        return b64(os.urandom(self.rng.randint(1, 64)))

    def acked(self, key: str, ciphertext: str, plaintext: str) -> None:
        self.cluster.acks.ciphertexts.setdefault(key, []).append((ciphertext, plaintext))

    async def encrypt(self) -> None:
        plaintext = self.plaintext()
        ok, data = await self.cluster.call(
            "encrypt", self.node, "POST", f"transit/encrypt/{self.enc}", {"plaintext": plaintext}
        )
        if ok:
            self.acked(self.enc, data["data"]["ciphertext"], plaintext)

    async def batch(self) -> None:
        plaintexts = [self.plaintext() for _ in range(16)]
        body = {"batch_input": [{"plaintext": p} for p in plaintexts]}
        ok, data = await self.cluster.call("batch encrypt", self.node, "POST", f"transit/encrypt/{self.enc}", body)
        if ok:
            for plaintext, item in zip(plaintexts, data["data"]["batch_results"], strict=True):
                self.acked(self.enc, item["ciphertext"], plaintext)

    def some_ciphertext(self) -> tuple[str, str] | None:
        mine = self.cluster.acks.ciphertexts.get(self.enc)
        return self.rng.choice(mine) if mine else None

    async def decrypt(self) -> None:
        if (pair := self.some_ciphertext()) is None:
            return
        ok, data = await self.cluster.call(
            "decrypt", self.node, "POST", f"transit/decrypt/{self.enc}", {"ciphertext": pair[0]}
        )
        if ok and data["data"]["plaintext"] != pair[1]:
            self.cluster.wrong.append(f"decrypt of {pair[0][:24]}... gave another plaintext")

    async def rewrap(self) -> None:
        if (pair := self.some_ciphertext()) is None:
            return
        ok, data = await self.cluster.call(
            "rewrap", self.node, "POST", f"transit/rewrap/{self.enc}", {"ciphertext": pair[0]}
        )
        if ok:
            self.acked(self.enc, data["data"]["ciphertext"], pair[1])

    async def sign(self) -> None:
        message = self.plaintext()
        ok, data = await self.cluster.call(
            "sign", self.node, "POST", f"transit/sign/{self.sign_key}", {"input": message}
        )
        if not ok:
            return
        signature = data["data"]["signature"]
        self.cluster.acks.signatures.setdefault(self.sign_key, []).append((message, signature))
        body = {"input": message, "signature": signature}
        ok, data = await self.cluster.call("verify", self.node, "POST", f"transit/verify/{self.sign_key}", body)
        if ok and data["data"]["valid"] is not True:
            self.cluster.wrong.append(f"a signature of {self.sign_key} just made did not verify")

    async def hmac(self) -> None:
        message = self.plaintext()
        ok, data = await self.cluster.call("hmac", self.node, "POST", f"transit/hmac/{self.enc}", {"input": message})
        if ok:
            self.cluster.acks.hmacs.setdefault(self.enc, []).append((message, data["data"]["hmac"]))

    async def datakey(self) -> None:
        ok, data = await self.cluster.call("datakey", self.node, "POST", f"transit/datakey/plaintext/{self.enc}", {})
        if ok:
            self.acked(self.enc, data["data"]["ciphertext"], data["data"]["plaintext"])

    async def rotate(self) -> None:
        key = self.rng.choice((self.enc, self.sign_key))
        ok, _ = await self.cluster.call("rotate", self.node, "POST", f"transit/keys/{key}/rotate", {}, write=True)
        if ok:
            self.cluster.acks.rotations[key] += 1
        elif ok is None:
            self.cluster.acks.unsure_rotations[key] += 1

    async def config(self) -> None:
        body = {"deletion_allowed": not self.deletion_allowed, "auto_rotate_period": "0"}
        ok, _ = await self.cluster.call("config", self.node, "POST", f"transit/keys/{self.enc}/config", body)
        if ok:
            self.deletion_allowed = not self.deletion_allowed

    async def trim(self) -> None:
        """On a key of its own, used on both nodes between steps: two rotations, both minimums raised to 3,
        versions 1 and 2 trimmed, then used on both nodes again. What it encrypted before the trim is given up
        with the versions (not acknowledged); what it encrypts after must decrypt. A step that fails leaves
        the key as it is (its versions are still checked)."""
        self.scratch += 1
        name = f"chaos-{self.n}-trim-{self.scratch}"
        if not await self.create(name, "aes256-gcm96"):
            return
        acks = self.cluster.acks
        for _ in range(2):
            ok, _ = await self.cluster.call("rotate", self.node, "POST", f"transit/keys/{name}/rotate", {}, write=True)
            if not ok:
                acks.unsure_rotations[name] += ok is None
                return
            acks.rotations[name] += 1
            for node in self.nodes:
                body = {"plaintext": self.plaintext()}
                await self.cluster.call("encrypt", node, "POST", f"transit/encrypt/{name}", body)
        minimums = {"min_decryption_version": 3, "min_encryption_version": 3}
        ok, _ = await self.cluster.call("config", self.node, "POST", f"transit/keys/{name}/config", minimums)
        if not ok:
            return
        body = {"min_available_version": 3}
        ok, _ = await self.cluster.call("trim", self.node, "POST", f"transit/keys/{name}/trim", body, write=True)
        if not ok:
            return
        acks.trimmed[name] = 3
        for node in self.nodes:
            plaintext = self.plaintext()
            body = {"plaintext": plaintext}
            ok, data = await self.cluster.call("encrypt", node, "POST", f"transit/encrypt/{name}", body)
            if ok:
                self.acked(name, data["data"]["ciphertext"], plaintext)
