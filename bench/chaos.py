"""Faults under load: two ``kms-service serve`` nodes on one PostgreSQL, clients doing every crypto operation
and key change through both, while the run kills a node (SIGKILL) and starts it again, restarts PostgreSQL,
holds hostile sockets open (idle keep-alive, headers or a body that never finish) and sends hostile bodies
(oversized, malformed JSON, a gzip bomb, bad base64). Then it checks what was acknowledged:

- every acknowledged ciphertext (encrypt, batch encrypt, rewrap, datakey) decrypts on both nodes;
- every acknowledged signature and HMAC verifies on both nodes;
- every key's versions are contiguous, both nodes agree, and its acknowledged rotations and trims are there;
- the audit chains verify (``kms-service audit verify``: each node's file and the database table);
- no honest request got a 5xx, or no answer, outside the outage windows (a node's: from its kill until it is
  healthy again, for requests to that node; PostgreSQL's: from its stop until both nodes are healthy again);
- every hostile body got a 4xx in Vault's envelope and every hostile socket was closed by the node.

PostgreSQL is a cluster of the run's own (initdb and pg_ctl in a temporary directory, on a free port), never
the server at 127.0.0.1:5432.

    .venv/bin/python bench/chaos.py                       # a few minutes (make chaos)
    .venv/bin/python bench/chaos.py --quick               # about half a minute (tests/test_chaos.py)
    .venv/bin/python bench/chaos.py --clients 16 --duration 600 --kills 4 --pg-restarts 3

Writes ``bench/results/chaos-<UTC date and time>.md`` (``--out`` for elsewhere); exit status 1 unless the
verdict is PASS.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent))
import chaos_checks  # noqa: E402
import chaos_faults as faults  # noqa: E402
from chaos_load import Client, Cluster  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
# The listener's limits are short so hostile sockets are cut within the run; the outage window is longer than
# any PostgreSQL restart here, so warm crypto goes on through it.
NODE_ARGS = [
    "--workers", "1",
    "--header-read-timeout", "2",
    "--request-read-timeout", "5",
    "--idle-timeout", "5",
    "--stale-while-down", "60",
    "--cache-ttl", "5",
    "--audit-db",
]  # fmt: skip
MAX_REQUEST_BYTES = 2 * 1024 * 1024  # serve's default --max-request-size
# The services YAML the nodes provision; the clients make the keys they use.
SERVICES_YAML = """
chaos:
    type: vault-kms:1.12
    configuration:
        endpoints:
            chaos:
                - {policy: encrypt, key: chaos-hostile, type: encrypt}
"""


@dataclass
class Window:
    kind: str  # "node kill" or "PostgreSQL restart"
    node: str | None  # the node killed (None: every node)
    started: float
    ended: float = float("inf")

    def covers(self, node: str, started: float, ended: float) -> bool:
        return (self.node is None or self.node == node) and started <= self.ended and ended >= self.started


class Run:
    def __init__(self, options: argparse.Namespace, workdir: Path) -> None:
        self.options = options
        self.workdir = workdir
        self.windows: list[Window] = []
        self.faults: list[str] = []  # one line per fault injected, for the report
        self.down: set[str] = set()  # nodes killed and not yet healthy again
        self.sockets: list[faults.SocketResult] = []
        self.bodies: list[faults.BodyResult] = []
        self.rss: list[str] = []
        self.t0 = time.monotonic()

    def at(self) -> float:
        return time.monotonic() - self.t0

    async def fault_schedule(self, session, postgres: faults.Postgres, nodes: list[faults.Node]) -> None:
        """Kills and PostgreSQL restarts spread over the run, one at a time, each waited out until healthy."""
        duration = self.options.duration
        events = ["kill"] * self.options.kills + ["pg"] * self.options.pg_restarts
        random.Random(7).shuffle(events)
        kills = 0
        for i, event in enumerate(events):
            due = self.t0 + duration * (i + 1) / (len(events) + 1)
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            if event == "kill":
                node = nodes[kills % len(nodes)]  # each node in turn
                kills += 1
                window = Window("node kill", node.name, time.monotonic())
                self.windows.append(window)
                self.down.add(node.name)
                await asyncio.to_thread(node.kill)
                await asyncio.sleep(self.options.down_for)
                await asyncio.to_thread(node.launch)
                took = await faults.wait_healthy(session, [node])
                window.ended = time.monotonic()
                self.down.discard(node.name)
                self.faults.append(
                    f"{window.started - self.t0:6.1f} s: node {node.name} killed (SIGKILL), started again after "
                    f"{self.options.down_for:.0f} s, healthy {took:.1f} s later; "
                    f"window {window.ended - window.started:.1f} s"
                )
            else:
                window = Window("PostgreSQL restart", None, time.monotonic())
                self.windows.append(window)
                await asyncio.to_thread(postgres.stop)
                await asyncio.sleep(self.options.down_for)
                await asyncio.to_thread(postgres.start)
                took = await faults.wait_healthy(session, nodes)
                window.ended = time.monotonic()
                self.faults.append(
                    f"{window.started - self.t0:6.1f} s: PostgreSQL stopped (immediate), started after "
                    f"{self.options.down_for:.0f} s, both nodes healthy {took:.1f} s later; window "
                    f"{window.ended - window.started:.1f} s"
                )

    async def hostile(self, nodes: list[faults.Node], token: str, stop: asyncio.Event, bodies) -> None:
        """Rounds of hostile sockets and bodies against the nodes that are up, until the load ends."""
        limit = 15.0  # far above the node's timeouts (NODE_ARGS): a socket still open then is a failure
        # Connections of their own: an honest client never shares one with hostile requests.
        async with aiohttp.ClientSession() as session:
            await self._hostile_rounds(session, nodes, token, stop, bodies, limit)

    async def _hostile_rounds(self, session, nodes, token, stop, bodies, limit: float) -> None:
        round_no = 0
        while not stop.is_set():
            up = [n for n in nodes if n.name not in self.down]
            if not up:
                await asyncio.sleep(0.2)
                continue
            node = up[round_no % len(up)]
            round_no += 1
            started = time.monotonic()
            rss_before = node.rss_kib()
            sockets = [faults.idle_keepalive(node, token, limit) for _ in range(self.options.hostile_sockets)]
            sockets += [faults.slowloris(node, limit) for _ in range(self.options.hostile_sockets)]
            sockets += [faults.slow_body(node, token, limit)]
            sent = [faults.send_hostile(session, node, token, body) for body in bodies]
            sent.append(faults.malformed_chunked(node, token))
            results = await asyncio.gather(*sockets, *sent, return_exceptions=True)
            if any(w.covers(node.name, started, time.monotonic()) for w in self.windows):
                # The node was killed meanwhile (its sockets cut by that, not by its limits), or PostgreSQL
                # restarted (a 503 for a key lookup is then the answer): this round tells nothing.
                continue
            for result in results:
                if isinstance(result, faults.SocketResult):
                    self.sockets.append(result)
                elif isinstance(result, faults.BodyResult):
                    self.bodies.append(result)
                elif isinstance(result, BaseException):
                    self.sockets.append(
                        faults.SocketResult(f"error {type(result).__name__}: {result}", node.name, None)
                    )
            rss_after = node.rss_kib()
            if rss_before and rss_after:
                self.rss.append(
                    f"node {node.name}: {rss_before // 1024} MiB before a round, {rss_after // 1024} MiB after"
                )
            await asyncio.wait([asyncio.ensure_future(stop.wait())], timeout=self.options.hostile_every)

    async def main(self) -> chaos_checks.Verdict:
        options = self.options
        postgres = faults.Postgres()
        nodes: list[faults.Node] = []
        try:
            postgres.start()
            from kms_service.seal import MasterKey

            env = {k: v for k, v in os.environ.items() if not k.startswith("KMS_")}
            env.update(
                KMS_DATABASE_URL=postgres.url,
                KMS_DATA_DIR=str(self.workdir / "data"),
                KMS_MASTER_KEY=MasterKey.generate().export(),
            )
            config = self.workdir / "services.yaml"
            config.write_text(SERVICES_YAML)
            args = ["--config", str(config), *NODE_ARGS]
            nodes = [faults.Node(name, env, self.workdir, args) for name in ("a", "b")]
            # Health checks on connections of their own, one per check; the clients' connections are kept
            # alive for less than the nodes' --idle-timeout, so no client reuses one a node is closing.
            control = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))
            async with control as session:
                nodes[0].launch()  # the first node migrates the database; then the second
                await faults.wait_healthy(session, nodes[:1])
                nodes[1].launch()
                await faults.wait_healthy(session, nodes)
                token = await chaos_checks.root_token(env)
                # Made before the load: compressing the gzip bomb would hold up the clients' event loop.
                bodies = await asyncio.to_thread(faults.hostile_bodies, MAX_REQUEST_BYTES)
                load = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=2))
                cluster = Cluster({n.name: n.url for n in nodes}, token, load)
                stop = asyncio.Event()
                self.t0 = time.monotonic()
                clients = [asyncio.ensure_future(Client(i, cluster, stop).run()) for i in range(options.clients)]
                hostile = asyncio.ensure_future(self.hostile(nodes, token, stop, bodies))
                await self.fault_schedule(session, postgres, nodes)
                await asyncio.sleep(max(0.0, self.t0 + options.duration - time.monotonic()))
                stop.set()
                await asyncio.gather(*clients, hostile)
                load_seconds = time.monotonic() - self.t0
                await faults.wait_healthy(session, nodes)
                verdict = chaos_checks.Verdict(load_seconds=load_seconds)
                await chaos_checks.check_acknowledged(cluster, verdict)
                await chaos_checks.check_keys(cluster, verdict)
                await load.close()
            exits = [node.stop() for node in nodes]
            verdict.check("both nodes stopped cleanly (exit status 0)", exits == [0, 0], f"exit statuses {exits}")
            chaos_checks.check_audit(env, nodes, verdict)
            chaos_checks.check_attempts(cluster, self.windows, verdict)
            chaos_checks.check_hostile(self.sockets, self.bodies, options, verdict)
            verdict.faults, verdict.rss = self.faults, self.rss
            verdict.windows = [(w.kind, w.node, w.started - self.t0, w.ended - self.t0) for w in self.windows]
            return verdict
        finally:
            for node in nodes:
                node.stop()
            postgres.remove()


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run: 3 clients, 20 s, one fault of each kind")
    parser.add_argument("--clients", type=int, default=8, help="honest clients (default 8)")
    parser.add_argument("--duration", type=float, default=180.0, help="seconds of load (default 180)")
    parser.add_argument("--kills", type=int, default=2, help="nodes killed with SIGKILL (default 2)")
    parser.add_argument("--pg-restarts", type=int, default=2, help="PostgreSQL restarts (default 2)")
    parser.add_argument("--down-for", type=float, default=3.0, help="seconds a killed node or PostgreSQL stays down")
    parser.add_argument("--hostile-sockets", type=int, default=20, help="idle and slowloris sockets per round, each")
    parser.add_argument("--hostile-every", type=float, default=10.0, help="seconds between hostile rounds")
    parser.add_argument("--keep", action="store_true", help="keep the nodes' logs and audit files (printed path)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="directory of the report (default bench/results)")
    options = parser.parse_args(argv)
    if options.quick:
        options.clients, options.duration, options.kills, options.pg_restarts = 3, 20.0, 1, 1
        options.down_for, options.hostile_sockets, options.hostile_every = 2.0, 5, 8.0
    return options


def main(argv: list[str] | None = None) -> Path:
    options = parse(argv)
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H%M%SZ")
    workdir = Path(tempfile.mkdtemp(prefix="kms-chaos-"))
    try:
        verdict = asyncio.run(Run(options, workdir).main())
    finally:
        if options.keep:
            print(f"nodes' logs and audit files kept in {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    options.out.mkdir(parents=True, exist_ok=True)
    report = options.out / f"chaos-{stamp}.md"
    report.write_text(chaos_checks.report(verdict, options, stamp))
    print(report.read_text())
    print(f"report: {report}")
    return report


if __name__ == "__main__":
    written = main()
    sys.exit(0 if "**Verdict: PASS**" in written.read_text() else 1)
