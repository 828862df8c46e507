"""Scale of data: a database of many keys with several versions each, and what it costs a server.

Loads ``--keys`` chacha20-poly1305 keys with ``--versions`` versions each into a new SQLite database through
the service's own code (``KeyService.create_with_versions``: sealed like any key, ``--chunk`` keys per
transaction), then starts ``kms-service serve --workers 1`` on it and reports:

- start-up time: from starting the process to its first healthy answer (the keys are loaded lazily, so this
  should not grow with them);
- resident memory: the server's RSS after start-up, and after every key has been used once (all cached),
  per 1,000 keys;
- the first request to a cold key (one this process never used: its versions are read, unsealed and built)
  against the same request once warm, as medians over ``--cold-samples`` keys.

    .venv/bin/python bench/scale_bench.py                  # 10,000 keys x 5 versions (a few minutes)
    .venv/bin/python bench/scale_bench.py --keys 50        # the suite's size (tests/test_bench.py)

Writes ``bench/results/<UTC date and time>-scale.md`` (and .json) unless ``--out`` says elsewhere.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
import transit_bench  # noqa: E402

KEY_TYPE = "chacha20-poly1305"
PLAINTEXT = base64.b64encode(b"x" * 64).decode()


def key_name(i: int) -> str:
    return f"scale-{i:06d}"


async def load_keys(data_dir: Path, keys: int, versions: int, chunk: int) -> float:
    """Seconds taken to write ``keys`` keys of ``versions`` versions each (the database exists already)."""
    from kms_service.keyring import KeySettings
    from kms_service.service import KMS
    from kms_service.settings import Settings

    started = time.perf_counter()
    async with KMS.session(Settings(data_dir=data_dir), create=False) as kms:
        transit = kms.keys
        settings = KeySettings.for_new_key(KEY_TYPE)
        for first in range(0, keys, chunk):
            names = [key_name(i) for i in range(first, min(keys, first + chunk))]
            # Material before the transaction, as the service makes it (never under the writers' lock).
            materials = {name: [await transit.generate(KEY_TYPE) for _ in range(versions)] for name in names}
            async with kms.db.writing() as session:
                for name in names:
                    await transit.create_with_versions(session, name, KEY_TYPE, materials[name], settings)
    return time.perf_counter() - started


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def encrypt_ms(session: requests.Session, target: transit_bench.Target, name: str) -> float:
    started = time.perf_counter()
    reply = session.post(
        f"{target.url}/v1/transit/encrypt/{name}",
        json={"plaintext": PLAINTEXT},
        headers={"X-Vault-Token": target.token},
        timeout=60,
    )
    elapsed = (time.perf_counter() - started) * 1000
    if reply.status_code != 200:
        raise SystemExit(f"encrypt {name}: {reply.status_code} {reply.text[:300]}")
    if f":v{reply.json()['data']['key_version']}:" not in reply.json()["data"]["ciphertext"]:
        raise SystemExit(f"encrypt {name}: unexpected answer {reply.text[:300]}")
    return elapsed


def measure(workdir: Path, keys: int, cold_samples: int) -> dict:
    started = time.perf_counter()
    target = transit_bench.start_kms(workdir, "kms-scale", 1)  # returns once healthy
    startup = time.perf_counter() - started
    try:
        pid = target.proc.pid
        rss_started = rss_bytes(pid)
        session = requests.Session()
        cold_names = [key_name(i) for i in range(0, keys, max(1, keys // cold_samples))][:cold_samples]
        cold = [encrypt_ms(session, target, name) for name in cold_names]
        warm = [encrypt_ms(session, target, name) for name in cold_names]
        latest = requests.get(
            f"{target.url}/v1/transit/keys/{cold_names[0]}", headers={"X-Vault-Token": target.token}, timeout=60
        ).json()["data"]["latest_version"]
        for i in range(keys):  # every key used once: all of them cached
            encrypt_ms(session, target, key_name(i))
        rss_all = rss_bytes(pid)
    finally:
        target.stop()
    return {
        "startup_s": startup,
        "rss_started_mib": rss_started / 2**20,
        "rss_all_keys_mib": rss_all / 2**20,
        "rss_per_1000_keys_mib": (rss_all - rss_started) / 2**20 / keys * 1000,
        "cold_first_request_ms": statistics.median(cold),
        "warm_request_ms": statistics.median(warm),
        "cold_samples": len(cold),
        "latest_version_seen": latest,
    }


def render(report: dict) -> str:
    r = report["results"]
    lines = [f"# Scale benchmark {report['date']}", "", "## Machine", ""]
    lines += [f"- {key}: {value}" for key, value in report["machine"].items()]
    lines += [
        f"- command: `{report['command']}`",
        "",
        "## Results",
        "",
        f"- keys: {report['keys']} ({KEY_TYPE}), {report['versions']} versions each "
        f"(latest version read back: {r['latest_version_seen']}); SQLite",
        f"- loading them (KeyService.create_with_versions, {report['chunk']} keys per transaction): "
        f"{report['load_s']:.1f} s",
        f"- start-up (`serve --workers 1`, process start to first healthy answer): {r['startup_s']:.2f} s",
        f"- resident memory: {r['rss_started_mib']:.1f} MiB after start-up, {r['rss_all_keys_mib']:.1f} MiB with "
        f"every key used once: {r['rss_per_1000_keys_mib']:.2f} MiB per 1,000 keys",
        f"- first encrypt with a cold key: {r['cold_first_request_ms']:.2f} ms (median of {r['cold_samples']} keys); "
        f"the same request warm: {r['warm_request_ms']:.2f} ms",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--versions", type=int, default=5)
    parser.add_argument("--chunk", type=int, default=500, help="keys per write transaction")
    parser.add_argument("--cold-samples", type=int, default=20, help="cold keys timed")
    parser.add_argument("--out", type=Path, default=transit_bench.ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    if args.keys < 1 or args.versions < 1 or args.chunk < 1 or args.cold_samples < 1:
        parser.error("--keys, --versions, --chunk and --cold-samples must be at least 1")
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        transit_bench.start_kms(workdir, "kms-init", 1).stop()  # makes the database and its master key
        load_s = asyncio.run(load_keys(workdir / "kms-data", args.keys, args.versions, args.chunk))
        results = measure(workdir, args.keys, min(args.cold_samples, args.keys))
    date = time.strftime("%Y-%m-%dT%H%M%SZ", time.gmtime())
    report = {
        "date": date,
        "machine": transit_bench.machine("python", []),
        "command": " ".join(["bench/scale_bench.py", *(argv if argv is not None else sys.argv[1:])]),
        "keys": args.keys,
        "versions": args.versions,
        "chunk": args.chunk,
        "load_s": load_s,
        "results": results,
    }
    report["machine"].pop("load generator", None)
    text = render(report)
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"{date}-scale.md"
    out.write_text(text)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2))
    print(text)
    print(f"report: {out}")
    return out


if __name__ == "__main__":
    os.environ.pop("KMS_DATABASE_URL", None)  # the bench's own SQLite file, never a configured database
    main()
