"""The fault-and-load run (bench/chaos.py, ``make chaos``) in its short form: two nodes on a PostgreSQL cluster
of the run's own, clients doing every operation through both while a node is killed and restarted, PostgreSQL
is restarted and hostile sockets and bodies come in. The report's verdict must be PASS: nothing acknowledged
lost, no 5xx outside the outage windows, the audit chains intact, every hostile input refused."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import chaos  # noqa: E402

# Long: `make test` runs the slow group after the rest.
pytestmark = [pytest.mark.slow, pytest.mark.postgresql]


def test_the_quick_chaos_run_loses_nothing_and_passes_every_check(tmp_path):
    report = chaos.main(["--quick", "--out", str(tmp_path)])
    text = report.read_text()
    failed = [line for line in text.splitlines() if "| FAIL |" in line]
    assert not failed, "\n".join(failed)
    assert "**Verdict: PASS** — requests lost: 0" in text, text
    assert re.search(r"^- faults injected: 2 \(1 node kills, 1 PostgreSQL restarts\)", text, re.MULTILINE), text
    assert re.search(r"^- acknowledged: [1-9]\d* ", text, re.MULTILINE), text
    for kind in ("node kill", "PostgreSQL restart"):
        assert re.search(rf"^\| {kind} \| \w+ \| [\d.]+ \| [\d.]+ \|$", text, re.MULTILINE), text
    for check in ("decrypts on node a", "verifies on node b", "audit table's chains verify", "hostile body"):
        assert re.search(rf"^\| [^|]*{check}[^|]* \| pass \|", text, re.MULTILINE), (check, text)
