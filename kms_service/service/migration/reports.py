"""What a move reports per key (its outcome, route and why), the run over the keys, and the summary."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from kms_service.errors import KMSError
from kms_service.service.migration.client import MigrationError

# Outcomes in a report.
MOVED = "moved"
UPDATED = "updated"
IDENTICAL = "identical"
NOT_MOVABLE = "not-movable"
CONFLICT = "conflict"
FAILED = "failed"
PROBLEMS = (NOT_MOVABLE, CONFLICT, FAILED)
# Told as each key starts and ends: (its index from 1, how many keys, what is happening, whether it ended).
Progress = Callable[[int, int, str, bool], None]


@dataclass
class KeyReport:
    name: str
    outcome: str
    route: str = ""
    detail: str = ""
    key_type: str = ""

    def line(self, dry_run: bool = False) -> str:
        outcome = f"would be {self.outcome}" if dry_run and self.outcome in (MOVED, UPDATED) else self.outcome
        parts = [f"{self.name}: {outcome}"]
        if self.key_type:
            parts.append(f"({self.key_type})")
        if self.route:
            parts.append(f"via {self.route}")
        text = " ".join(parts)
        return f"{text}: {self.detail}" if self.detail else text


class Skip(Exception):
    def __init__(self, report: KeyReport) -> None:
        self.report = report


async def each_key(
    names: list[str],
    one: Callable[[str], Awaitable[KeyReport]],
    doing: str,
    dry_run: bool,
    progress: Progress,
) -> list[KeyReport]:
    """``one`` for each key, in order, telling ``progress`` as each starts and ends; a key's own failure is its
    report, and the run goes on (a MigrationError, the other server failing as a whole, ends it)."""
    reports = []
    for index, name in enumerate(names, 1):
        progress(index, len(names), f"{name}: {doing}", False)
        try:
            report = await one(name)
        except Skip as skip:
            report = skip.report
        except MigrationError:
            raise
        except KMSError as exc:
            report = KeyReport(name, FAILED, detail=exc.message)
        reports.append(report)
        progress(index, len(names), report.line(dry_run), True)
    return reports


def span(first: int, last: int) -> str:
    return f"version {first}" if first == last else f"versions {first}-{last}"


def summary(reports: list[KeyReport], dry_run: bool) -> str:
    counts: dict[str, int] = {}
    for report in reports:
        counts[report.outcome] = counts.get(report.outcome, 0) + 1
    if not reports:
        return "no keys to move"
    parts = [f"{counts[o]} {o}" for o in (MOVED, UPDATED, IDENTICAL, NOT_MOVABLE, CONFLICT, FAILED) if counts.get(o)]
    changed = counts.get(MOVED, 0) + counts.get(UPDATED, 0)
    if dry_run:
        tail = "dry run: nothing was changed"
    elif changed == 0:
        tail = "nothing changed"
    else:
        tail = f"{changed} key(s) written"
    return f"{len(reports)} key(s): {', '.join(parts)} ({tail})"
