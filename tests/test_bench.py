"""The benchmark harnesses (bench/transit_bench.py, bench/scale_bench.py) on a tiny load: they start their
servers, drive them, and write their reports. Never a figure: what is asserted is that the harness works,
not how fast anything is."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
from tools import find_tool

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import scale_bench  # noqa: E402
import transit_bench  # noqa: E402

# Long: `make test` runs the slow group after the rest.
pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    ("load", "targets", "ops"),
    [
        ("python", "bare,kms-1", "encrypt"),
        ("wrk", "bare,kms-1", ",".join(transit_bench.OPS)),  # --quick: every op, 1 s, 1 connection
    ],
)
def test_the_harness_drives_its_servers_and_writes_its_report(tmp_path, load, targets, ops):
    if load == "wrk":
        find_tool("wrk")
    args = ["--quick", "--load", load, "--targets", targets, "--ops", ops]
    report = transit_bench.main([*args, "--out", str(tmp_path)])
    text = report.read_text()
    assert re.search(r"^- cores: \d+$", text, re.MULTILINE) and "- cpu: " in text
    assert re.search(r"load average \(1 min\) before the run: [\d.]+", text)
    assert "kms-1 and bare pinned to core 0" in text
    for op in ops.split(","):
        for target in targets.split(","):
            if target == "bare" and op not in ("encrypt", *transit_bench.BATCH_ITEMS):
                continue  # the bare handler only encrypts
            row = re.search(
                rf"^\| {op} \| 1 \| {re.escape(target)} \| (\d+) \| (\d+) \| [\d.]+ \| [\d.]+ \| (\d+) \| \d+ \|$",
                text,
                re.MULTILINE,
            )
            assert row, (op, target, text)
            requests, items, cpu = (int(g) for g in row.groups())
            per_request = transit_bench.BATCH_ITEMS.get(op, 1)
            assert requests > 0 and cpu > 0 and items == pytest.approx(requests * per_request, abs=per_request)
    assert re.search(r"^\| encrypt \| 1 \| – \| \d+\.\d\d \| – \| – \| \d+\.\d\d \|$", text, re.MULTILINE), text
    chart = report.with_suffix(".png")
    assert f"Chart: {chart.name}" in text and chart.read_bytes().startswith(b"\x89PNG")
    raw = json.loads(report.with_suffix(".json").read_text())
    assert {row["target"] for row in raw["rows"]} == set(targets.split(","))


def test_a_refused_batch_is_reported_not_driven(tmp_path, monkeypatch):
    """OpenBao refuses batch-1000 bodies; the same path through a target told to refuse it here: a
    kms-service whose --max-batch-items is below 1000 (a real refusal, from the real server)."""
    monkeypatch.setenv("KMS_MAX_BATCH_ITEMS", "500")
    monkeypatch.setattr(transit_bench, "start_kms", _keeping_env(transit_bench.start_kms))
    report = transit_bench.main(["--quick", "--targets", "kms-1", "--ops", "batch1000-encrypt", "--out", str(tmp_path)])
    text = report.read_text()
    assert "## Refused" in text and "- kms-1 batch1000-encrypt: 400 " in text and "at most 500" in text, text
    assert not re.search(r"^\| batch1000-encrypt \| 1 \| kms-1 \|", text, re.MULTILINE)


def _keeping_env(start):
    """start_kms drops every KMS_* variable of the environment; keep KMS_MAX_BATCH_ITEMS for this test."""

    def wrapped(workdir, name, workers, pinned=False):
        real_popen = transit_bench.subprocess.Popen

        def popen(args, *a, env=None, **k):
            if env is not None and "serve" in args:
                env = {**env, "KMS_MAX_BATCH_ITEMS": "500"}
            return real_popen(args, *a, env=env, **k)

        transit_bench.subprocess.Popen = popen
        try:
            return start(workdir, name, workers, pinned)
        finally:
            transit_bench.subprocess.Popen = real_popen

    return wrapped


def test_the_scale_step_loads_keys_and_reports_what_they_cost(tmp_path):
    report = scale_bench.main(
        ["--keys", "50", "--versions", "5", "--chunk", "20", "--cold-samples", "5", "--out", str(tmp_path)]
    )
    text = report.read_text()
    assert "- keys: 50 (chacha20-poly1305), 5 versions each (latest version read back: 5); SQLite" in text
    assert re.search(r"start-up .*: [\d.]+ s$", text, re.MULTILINE), text
    assert re.search(r": [\d.-]+ MiB per 1,000 keys$", text, re.MULTILINE), text
    assert re.search(r"first encrypt with a cold key: [\d.]+ ms \(median of 5 keys\)", text), text
    raw = json.loads(report.with_suffix(".json").read_text())
    assert raw["results"]["cold_first_request_ms"] > 0 and raw["results"]["startup_s"] > 0


def test_the_callgrind_harness_counts_instructions_per_request(tmp_path):
    """bench/callgrind_bench.py --quick: both servers under callgrind, both operations, a report with a count
    per request for each and the ratio (no figure asserted: valgrind is on every machine here, CI installs it
    where missing)."""
    import callgrind_bench

    find_tool("valgrind")

    report = callgrind_bench.main(["--quick", "--out", str(tmp_path)])
    text = report.read_text()
    for op in callgrind_bench.OPS:
        for target in callgrind_bench.TARGETS:
            row = re.search(rf"^\| {op} \| {target} \| 10 \| ([\d,]+) \| ([\d,]+) \| ([\d,]+) \|$", text, re.MULTILINE)
            assert row, (op, target, text)
            per_request = int(row.group(1).replace(",", ""))
            assert per_request > 0
        assert re.search(rf"^\| {op} \| \d\.\d\d \|$", text, re.MULTILINE), text
    raw = json.loads(report.with_suffix(".json").read_text())
    assert {(row["op"], row["target"]) for row in raw["rows"]} == {
        (op, target) for op in callgrind_bench.OPS for target in callgrind_bench.TARGETS
    }


def test_the_hostile_connections_harness_attacks_a_server_and_times_an_honest_client(tmp_path):
    """bench/hostile_connections.py --quick: a server started as a user does, 200 hostile sockets, an honest
    client timed meanwhile; its report. Asserted: the harness works and the honest client was always
    answered (never a 503): a property of the listener, not a figure."""
    import hostile_connections

    report = hostile_connections.main(["--quick", "--out", str(tmp_path)])
    text = report.read_text()
    assert re.search(r"^\| under attack \| \d+ \| [\d.]+ \| [\d.]+ \| [\d.]+ \| 200: \d+ \|$", text, re.MULTILINE), text
    raw = json.loads(report.with_suffix(".json").read_text())
    assert raw["attacker"]["opened"] >= 200
    assert set(raw["under_attack"]["statuses"]) == {"200"} and raw["under_attack"]["requests"] > 0
