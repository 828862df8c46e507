"""Hostile connections against a server started as a user starts it, while an honest client is timed.

``kms-service serve`` with its defaults (a worker per core, each with ``--max-connections`` and
``--max-connections-per-address`` at their defaults) takes ``--sockets`` hostile connections (2,000: more than
every worker's slots together, so the attack always fills the listener) from ``--addresses`` loopback
addresses (127.0.0.2 on), half of them each of:

- idle keep-alive: one ``GET /v1/sys/health``, read its answer, then nothing;
- slowloris: a request line and one header, then one more header line every few seconds, never the end.

Every hostile socket the server closes is opened again ``--reconnect-delay`` seconds later, so the attack
holds its strength for the whole run. Meanwhile an honest client on 127.0.0.1 opens a new connection for
each ``GET /v1/sys/health`` (a new client each time: the one a full listener would refuse) and times it from
connect to the end of the answer. The same client is timed first with no attack (the baseline).

Passes when the honest client is never answered 503 and its p95 under attack is at most ``--p95-limit``
milliseconds (250). Writes ``bench/results/<UTC date and time>-hostile.md`` (and .json) unless ``--out``
says elsewhere; exits 1 when it does not pass.

    .venv/bin/python bench/hostile_connections.py            # 2,000 sockets, 20 s under attack
    .venv/bin/python bench/hostile_connections.py --quick    # 200 sockets, 3 s (tests/test_bench.py)

A flood of new connections (more per second than the server accepts) is a matter of rate, not of slots,
and is not what this measures: the delay between a closed hostile socket and its next one keeps it apart.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import transit_bench  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
HONEST_ADDRESS = "127.0.0.1"
HEALTH = b"GET /v1/sys/health HTTP/1.1\r\nHost: kms\r\n\r\n"


# ---- the attacker: its own process (its event loop must not delay the honest client's timing) ----


async def _hostile(
    port: int, address: str, slowloris: bool, delay: float, counts: dict[str, int], all_open: asyncio.Event
) -> None:
    """One hostile socket, opened again each time the server closes it; ``all_open`` is set once ``counts``
    says as many were opened as there are sockets."""
    while True:
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(address, 0))
        except OSError:
            counts["connect_errors"] += 1
            await asyncio.sleep(delay)
            continue
        counts["opened"] += 1
        if counts["opened"] >= counts["sockets"]:
            all_open.set()
        try:
            if slowloris:
                writer.write(b"GET /v1/sys/health HTTP/1.1\r\nHost: kms\r\n")
                while True:
                    try:
                        if await asyncio.wait_for(reader.read(4096), 3.0) == b"":
                            break
                    except TimeoutError:
                        writer.write(b"X-Slow: a\r\n")
            else:
                writer.write(HEALTH)
                answer = await reader.read(4096)
                if answer.startswith(b"HTTP/1.1 503"):
                    counts["refused"] += 1
                while await reader.read(4096):  # held until the server closes it
                    pass
        except OSError:
            pass
        finally:
            writer.close()
        counts["closed_by_server"] += 1
        await asyncio.sleep(delay)


async def _attack(port: int, sockets: int, addresses: int, delay: float) -> None:
    counts = {"sockets": sockets, "opened": 0, "closed_by_server": 0, "refused": 0, "connect_errors": 0}
    all_open = asyncio.Event()
    tasks = []
    for i in range(sockets):
        address = f"127.0.0.{2 + i % addresses}"
        tasks.append(asyncio.create_task(_hostile(port, address, i % 2 == 1, delay, counts, all_open)))
        if i % 100 == 99:
            await asyncio.sleep(0)  # let the first ones connect before the next hundred
    await all_open.wait()
    print("ready", flush=True)
    # Until told to stop (a line on stdin), then the counts as one JSON line.
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    print(json.dumps(counts), flush=True)
    os._exit(0)  # the sockets go with the process


# ---- the honest client ----


def raise_file_limit(wanted: int) -> int:
    """The soft limit of open files raised towards ``wanted`` (at most the hard limit); the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        soft = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    return soft


def one_request(port: int) -> tuple[float, int]:
    """A new connection, one health request, its whole answer: seconds taken and the status (0: no answer)."""
    start = time.perf_counter()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(HONEST_ADDRESS, 0)) as sock:
            sock.sendall(HEALTH)
            reply = b""
            while b"\r\n\r\n" not in reply:
                chunk = sock.recv(65536)
                if not chunk:
                    return time.perf_counter() - start, 0
                reply += chunk
            head, _, body = reply.partition(b"\r\n\r\n")
            lines = head.split(b"\r\n")
            length = next((int(line[15:]) for line in lines if line.lower().startswith(b"content-length:")), 0)
            while len(body) < length:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                body += chunk
            return time.perf_counter() - start, int(lines[0].split()[1])
    except OSError:
        return time.perf_counter() - start, 0


def measure(port: int, seconds: float, pause: float = 0.01) -> dict:
    """Requests for ``seconds``: latency percentiles (ms) and the count of each status."""
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        elapsed, status = one_request(port)
        latencies.append(elapsed * 1000)
        statuses[str(status)] = statuses.get(str(status), 0) + 1
        time.sleep(pause)
    ordered = sorted(latencies)
    return {
        "requests": len(latencies),
        "statuses": statuses,
        "p50_ms": statistics.median(ordered),
        "p95_ms": ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))],
        "max_ms": ordered[-1],
    }


def open_connections(port: int) -> int:
    """Established connections to the server's port, as the kernel counts them (ss)."""
    listing = subprocess.run(
        ["ss", "-tnH", "state", "established", f"sport = :{port}"], capture_output=True, text=True, check=False
    ).stdout
    return sum(1 for line in listing.splitlines() if line.strip())


def render(report: dict) -> str:
    base, attacked, attack = report["baseline"], report["under_attack"], report["attacker"]
    verdict = "passed" if report["passed"] else "FAILED"
    return "\n".join(
        [
            f"# Hostile connections, {report['date']}",
            "",
            f"- server: `kms-service serve` with its defaults: {report['workers']} workers, "
            f"--max-connections {report['max_connections']} and --max-connections-per-address "
            f"{report['max_connections_per_address']} each",
            f"- attack: {report['sockets']} hostile sockets (half idle keep-alive, half slowloris) from "
            f"{report['addresses']} addresses, each opened again {report['reconnect_delay']} s after the server "
            f"closes it; {report['attack_seconds']} s",
            f"- machine: {os.cpu_count()} cores, load average (1 min) before the run: {report['load_before']:.2f}",
            "- honest client: a new connection per `GET /v1/sys/health` from 127.0.0.1, connect to last byte",
            "",
            "| phase | requests | p50 ms | p95 ms | max ms | statuses |",
            "|---|---|---|---|---|---|",
            *(
                f"| {name} | {row['requests']} | {row['p50_ms']:.1f} | {row['p95_ms']:.1f} | {row['max_ms']:.1f} | "
                f"{', '.join(f'{k}: {v}' for k, v in sorted(row['statuses'].items()))} |"
                for name, row in (("no attack", base), ("under attack", attacked))
            ),
            "",
            f"- hostile connections opened: {attack['opened']}, closed by the server: {attack['closed_by_server']}, "
            f"answered 503: {attack['refused']}; open at the server during the attack (ss, sampled): "
            f"{report['open_during_attack']}",
            f"- {verdict}: p95 under attack {attacked['p95_ms']:.1f} ms (limit {report['p95_limit_ms']:.0f} ms), "
            f"503s to the honest client: {attacked['statuses'].get('503', 0)}",
            "",
        ]
    )


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sockets", type=int, default=2000)
    parser.add_argument("--addresses", type=int, default=16, help="loopback addresses the attack comes from")
    parser.add_argument("--seconds", type=float, default=20.0, help="the honest client's time under attack")
    parser.add_argument("--reconnect-delay", type=float, default=0.5)
    parser.add_argument("--p95-limit", type=float, default=250.0, help="milliseconds")
    parser.add_argument("--quick", action="store_true", help="200 sockets, 3 s: the harness works")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--attacker-port", type=int, help=argparse.SUPPRESS)  # the attacker process's mode
    args = parser.parse_args(argv)
    if args.quick:
        args.sockets, args.seconds = 200, 3.0
    raise_file_limit(args.sockets + 1024)
    if args.attacker_port:
        asyncio.run(_attack(args.attacker_port, args.sockets, args.addresses, args.reconnect_delay))
        raise SystemExit(0)

    from kms_service.settings import DEFAULTS

    workers = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="kms-hostile-") as tmp:
        workdir = Path(tmp)
        load_before = os.getloadavg()[0]
        target = transit_bench.start_kms(workdir, "kms", None)  # serve as a user does: default workers
        attacker = None
        try:
            port = int(target.url.rsplit(":", 1)[1])
            baseline = measure(port, min(args.seconds, 5.0))
            attacker = subprocess.Popen(
                [
                    sys.executable,
                    __file__,
                    "--attacker-port",
                    str(port),
                    "--sockets",
                    str(args.sockets),
                    "--addresses",
                    str(args.addresses),
                    "--reconnect-delay",
                    str(args.reconnect_delay),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            if attacker.stdout.readline().strip() != "ready":
                raise SystemExit("the attacker did not open its sockets")
            open_during = open_connections(port)
            attacked = measure(port, args.seconds)
            attacker.stdin.write("stop\n")
            attacker.stdin.flush()
            counts = json.loads(attacker.stdout.readline())
            attacker.wait(30)
        finally:
            if attacker is not None:
                if attacker.poll() is None:
                    attacker.kill()
                    attacker.wait()
                attacker.stdin.close()
                attacker.stdout.close()
            target.stop()
    passed = attacked["statuses"].get("503", 0) == 0 and attacked["p95_ms"] <= args.p95_limit
    report = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "workers": workers,
        "max_connections": DEFAULTS.max_connections,
        "max_connections_per_address": DEFAULTS.max_connections_per_address,
        "sockets": args.sockets,
        "addresses": args.addresses,
        "reconnect_delay": args.reconnect_delay,
        "attack_seconds": args.seconds,
        "load_before": load_before,
        "p95_limit_ms": args.p95_limit,
        "baseline": baseline,
        "under_attack": attacked,
        "attacker": counts,
        "open_during_attack": open_during,
        "passed": passed,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / (datetime.now(UTC).strftime("%Y-%m-%dT%H%M%SZ") + "-hostile.md")
    path.write_text(render(report))
    path.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    return path


if __name__ == "__main__":
    result = main()
    print(result.read_text())
    raise SystemExit(0 if json.loads(result.with_suffix(".json").read_text())["passed"] else 1)
