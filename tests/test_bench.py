"""The benchmark harness (bench/transit_bench.py) on a tiny load: it starts its servers, drives them, and
writes its report. Never a figure: what is asserted is that the harness works, not how fast anything is."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import transit_bench  # noqa: E402


@pytest.mark.parametrize(
    ("load", "targets", "op"), [("python", "bare,kms-1", "encrypt"), ("wrk", "bare", "batch100-encrypt")]
)
def test_the_harness_drives_its_servers_and_writes_its_report(tmp_path, load, targets, op):
    args = ["--load", load, "--targets", targets, "--ops", op, "--connections", "1", "--duration", "1"]
    report = transit_bench.main([*args, "--out", str(tmp_path)])
    text = report.read_text()
    assert re.search(r"^- cores: \d+$", text, re.MULTILINE) and "- cpu: " in text
    assert re.search(r"load average \(1 min\) before the run: [\d.]+", text)
    for target in targets.split(","):
        row = re.search(rf"^\| {op} \| 1 \| {re.escape(target)} \| (\d+) \| (\d+) \|", text, re.MULTILINE)
        assert row, text
        requests, items = int(row.group(1)), int(row.group(2))
        assert requests > 0 and items == pytest.approx(requests * (100 if op.startswith("batch100") else 1), abs=100)
    if targets == "bare,kms-1":
        assert re.search(rf"^\| {op} \| 1 \| – \| \d+\.\d\d \| – \| – \|$", text, re.MULTILINE), text
    raw = json.loads(report.with_suffix(".json").read_text())
    assert {row["target"] for row in raw["rows"]} == set(targets.split(","))
