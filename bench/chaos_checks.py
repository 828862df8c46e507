"""bench/chaos.py's checks after the load, and its report."""

from __future__ import annotations

import argparse
import asyncio
import subprocess
from collections import Counter
from dataclasses import dataclass, field

import chaos_faults as faults
from chaos_load import Cluster

CHUNK = 250  # items per batch request of the checks


@dataclass
class Verdict:
    load_seconds: float
    checks: list[tuple[str, bool, str]] = field(default_factory=list)  # (what, passed, details)
    lost: int = 0  # acknowledged items that did not hold
    acknowledged: int = 0
    faults: list[str] = field(default_factory=list)
    windows: list[tuple[str, str | None, float, float]] = field(default_factory=list)
    rss: list[str] = field(default_factory=list)
    attempts: Counter = field(default_factory=Counter)  # (op, status or "no answer") → count
    expected_failures: int = 0
    hostile: list[str] = field(default_factory=list)

    def check(self, what: str, passed: bool, details: str = "") -> None:
        self.checks.append((what, passed, details))

    @property
    def passed(self) -> bool:
        return self.lost == 0 and all(passed for _, passed, _ in self.checks)


async def root_token(env: dict[str, str]) -> str:
    """An operator token, made as an operator makes one: ``kms-service token create``."""
    command = [*faults.KMS, "token", "create", "--policy", "root", "--ttl", "4h"]
    made = await asyncio.to_thread(subprocess.run, command, env=env, capture_output=True, text=True, timeout=120)
    if made.returncode != 0:
        raise RuntimeError(f"token create failed: {made.stderr}")
    return made.stdout.split()[-1]


async def _batch(cluster: Cluster, node: str, path: str, items: list[dict]) -> list[dict]:
    ok, data = await cluster.call("check", node, "POST", path, {"batch_input": items}, patience=60)
    if not ok:
        raise RuntimeError(f"check request {path} on {node} failed: {cluster.attempts[-1]}")
    return data["data"]["batch_results"]


async def check_acknowledged(cluster: Cluster, verdict: Verdict) -> None:
    acks = cluster.acks
    verdict.acknowledged = acks.count()
    for node in cluster.urls:
        bad = 0
        total = 0
        for key, pairs in acks.ciphertexts.items():
            for first in range(0, len(pairs), CHUNK):
                chunk = pairs[first : first + CHUNK]
                results = await _batch(cluster, node, f"transit/decrypt/{key}", [{"ciphertext": c} for c, _ in chunk])
                bad += sum(r.get("plaintext") != p for r, (_, p) in zip(results, chunk, strict=True))
                total += len(chunk)
        verdict.lost += bad
        verdict.check(f"every acknowledged ciphertext decrypts on node {node}", bad == 0, f"{total - bad}/{total}")
        for kind, groups in (("signature", acks.signatures), ("hmac", acks.hmacs)):
            bad = 0
            total = 0
            for key, pairs in groups.items():
                for first in range(0, len(pairs), CHUNK):
                    chunk = pairs[first : first + CHUNK]
                    items = [{"input": i, kind: value} for i, value in chunk]
                    results = await _batch(cluster, node, f"transit/verify/{key}", items)
                    bad += sum(r.get("valid") is not True for r in results)
                    total += len(chunk)
            verdict.lost += bad
            verdict.check(f"every acknowledged {kind} verifies on node {node}", bad == 0, f"{total - bad}/{total}")
    verdict.check("no 2xx answer was wrong", not cluster.wrong, "; ".join(cluster.wrong[:5]))


async def check_keys(cluster: Cluster, verdict: Verdict) -> None:
    """Every key's live versions run without a gap from its minimum decryption version to its latest; both nodes
    agree; acknowledged rotations are all there (and no more than those whose outcome was unknown besides);
    acknowledged trims hold."""
    acks = cluster.acks
    problems: list[str] = []
    lost = 0
    for key in sorted(set(acks.keys)):
        seen = []
        for node in cluster.urls:
            ok, data = await cluster.call("check", node, "GET", f"transit/keys/{key}", patience=60)
            if not ok:
                problems.append(f"{key}: not readable on {node}")
                lost += 1
                continue
            info = data["data"]
            versions = sorted(int(v) for v in info["keys"])
            # A key's read lists its live versions: from min_decryption_version (and what trim left) on.
            low = max(1, info.get("min_available_version") or 0, info.get("min_decryption_version") or 0)
            seen.append((versions, info["latest_version"], low))
            if versions != list(range(low, info["latest_version"] + 1)):
                problems.append(
                    f"{key} on {node}: versions {versions}, latest {info['latest_version']}, min_available_version "
                    f"{info.get('min_available_version')}, min_decryption_version {info.get('min_decryption_version')}"
                )
        if len(seen) == 2 and seen[0] != seen[1]:
            problems.append(f"{key}: the nodes disagree: {seen}")
        if not seen:
            continue
        versions, latest, low = seen[0]
        done, unsure = acks.rotations[key], acks.unsure_rotations[key]
        if not done <= latest - 1 <= done + unsure:
            problems.append(f"{key}: latest version {latest} after {done} acknowledged rotations (+{unsure} unknown)")
            lost += latest - 1 < done
        if key in acks.trimmed and (low, versions[:1]) != (acks.trimmed[key], [acks.trimmed[key]]):
            problems.append(f"{key}: trimmed to {acks.trimmed[key]}, versions {versions} from {low}")
            lost += 1
    verdict.lost += lost
    rotations = sum(acks.rotations.values())
    verdict.check(
        "key versions contiguous, the same on both nodes, every acknowledged rotation and trim there",
        not problems,
        "; ".join(problems[:5]) or f"{len(set(acks.keys))} keys, {rotations} rotations, {len(acks.trimmed)} trims",
    )


def check_audit(env: dict[str, str], nodes: list[faults.Node], verdict: Verdict) -> None:
    for what, args in (
        ("the audit files' chains verify", [str(n.audit_file) for n in nodes]),
        ("the audit table's chains verify", ["--db"]),
    ):
        command = [*faults.KMS, "audit", "verify", *args]
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        lines = (done.stdout + done.stderr).strip().splitlines()
        intact = sum("intact" in line for line in lines)
        details = f"{intact} chain(s) intact" if done.returncode == 0 else "; ".join(lines[-5:])
        verdict.check(f"{what} (kms-service audit verify)", done.returncode == 0, details)


def check_attempts(cluster: Cluster, windows: list, verdict: Verdict) -> None:
    """Every attempt that got a 5xx or no answer must fall in an outage window that covers its node."""
    outside = []
    for attempt in cluster.attempts:
        verdict.attempts[(attempt.op, attempt.status or "no answer")] += 1
        if attempt.status is not None and attempt.status < 500:
            continue
        if any(w.covers(attempt.node, attempt.started, attempt.ended) for w in windows):
            verdict.expected_failures += 1
        else:
            outside.append(attempt)
    details = "; ".join(
        f"{a.op} on {a.node} at {a.started - cluster.attempts[0].started:.1f} s: {a.status or 'no answer'} {a.error}"
        for a in outside[:5]
    )
    verdict.check("no honest request failed (5xx or no answer) outside the outage windows", not outside, details)
    verdict.check("no honest request refused (4xx)", not cluster.refused, "; ".join(cluster.refused[:5]))


def check_hostile(sockets, bodies, options: argparse.Namespace, verdict: Verdict) -> None:
    open_sockets = [s for s in sockets if s.closed_after is None]
    by_kind: dict[str, list[float]] = {}
    for s in sockets:
        if s.closed_after is not None:
            by_kind.setdefault(s.kind, []).append(s.closed_after)
    for kind, seconds in sorted(by_kind.items()):
        verdict.hostile.append(
            f"{kind}: {len(seconds)} closed by the node, after {min(seconds):.1f}–{max(seconds):.1f} s"
        )
    verdict.check(
        "every hostile socket closed by the node",
        bool(sockets) and not open_sockets,
        "; ".join(f"{s.kind} on {s.node} still open" for s in open_sockets[:5]) or f"{len(sockets)} sockets",
    )
    refused = Counter((b.name, b.status, b.error) for b in bodies)
    for (name, status, error), count in sorted(refused.items(), key=lambda kv: kv[0][0]):
        verdict.hostile.append(f"{name}: {status or 'no answer'} {error!r} ×{count}")
    bad = [b for b in bodies if not b.ok]
    verdict.check(
        "every hostile body refused with a 4xx in Vault's envelope",
        bool(bodies) and not bad,
        "; ".join(f"{b.name} on {b.node}: {b.status} {b.error}" for b in bad[:5]) or f"{len(bodies)} bodies",
    )


def report(verdict: Verdict, options: argparse.Namespace, stamp: str) -> str:
    answered = sum(n for (_, status), n in verdict.attempts.items() if status != "no answer")
    ok = sum(n for (_, status), n in verdict.attempts.items() if status != "no answer" and 200 <= status < 300)
    lines = [
        f"# Chaos run {stamp}",
        "",
        f"**Verdict: {'PASS' if verdict.passed else 'FAIL'}** — requests lost: {verdict.lost}, "
        f"checks passed: {sum(p for _, p, _ in verdict.checks)}/{len(verdict.checks)}",
        "",
        "## Summary",
        "",
        f"- load held: {options.clients} clients for {verdict.load_seconds:.0f} s through two nodes on one PostgreSQL",
        f"- faults injected: {len(verdict.faults)} ({options.kills} node kills, {options.pg_restarts} PostgreSQL "
        f"restarts), plus hostile sockets and bodies every {options.hostile_every:.0f} s",
        f"- requests: {sum(verdict.attempts.values())} attempts, {answered} answered, {ok} answered 2xx; "
        f"{verdict.expected_failures} failed inside an outage window (expected)",
        f"- acknowledged: {verdict.acknowledged} (ciphertexts, signatures, HMACs, keys, rotations, trims)",
        f"- requests lost: {verdict.lost}",
        "",
        "## Checks",
        "",
        "| check | result | details |",
        "|---|---|---|",
        *(f"| {what} | {'pass' if passed else 'FAIL'} | {details} |" for what, passed, details in verdict.checks),
        "",
        "## Faults and outage windows",
        "",
        *(f"- {line.strip()}" for line in verdict.faults),
        "",
        "| window | node | from (s) | to (s) |",
        "|---|---|---|---|",
        *(f"| {kind} | {node or 'all'} | {start:.1f} | {end:.1f} |" for kind, node, start, end in verdict.windows),
        "",
        "## Hostile traffic",
        "",
        *(f"- {line}" for line in verdict.hostile),
        *(f"- resident memory, {line}" for line in verdict.rss[-4:]),
        "",
        "## Requests by operation and status",
        "",
        "| operation | status | count |",
        "|---|---|---|",
        *(
            f"| {op} | {status} | {count} |"
            for (op, status), count in sorted(verdict.attempts.items(), key=lambda kv: (kv[0][0], str(kv[0][1])))
        ),
        "",
        f"Parameters: clients {options.clients}, duration {options.duration:.0f} s, kills {options.kills}, "
        f"PostgreSQL restarts {options.pg_restarts}, down for {options.down_for:.0f} s, hostile sockets "
        f"{options.hostile_sockets} of each kind per round{' (--quick)' if options.quick else ''}.",
        "",
    ]
    return "\n".join(lines)
