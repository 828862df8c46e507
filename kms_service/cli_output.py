"""How every command prints what it lists or shows: one layout for all of them.

- ``--json``: the values as the HTTP API gives them (booleans true/false, nested objects as objects, times in
  ISO 8601 UTC), for scripts.
- Standard output is a terminal: a table that fits its width. Identifiers (key names, mounts, accessors) are
  never wrapped, cut or dropped, so they can be copied into the next command; the other columns wrap within
  their cell, and the ones marked optional are dropped first (``--wide`` keeps every column).
- Standard output is a pipe or a file: a header line, then one line per row, cells separated by a tab, with
  no padding (``cut -f``, ``awk -F'\\t'``).

A show command prints a record: one ``field value`` line per field, in the same three forms. This module
imports nothing heavy: every command's ``--help`` passes through it.
"""

from __future__ import annotations

import json
import shutil
import sys
import textwrap
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import click

Row = dict[str, Any]
GAP = 2  # spaces between two columns of a table
NARROWEST = 6  # a column that wraps is never made narrower than this


@dataclass(frozen=True)
class Column:
    """One column: its ``header`` and the cell's value of a row (``cell``: a row's field, or a function)."""

    header: str
    cell: str | Callable[[Row], Any]
    identifier: bool = False  # never wrapped, cut or dropped
    optional: bool = False  # dropped first when the terminal is narrow (--wide keeps it)

    def text(self, row: Row) -> str:
        return text(row[self.cell] if isinstance(self.cell, str) else self.cell(row))


def text(value: Any) -> str:
    """A value as a cell shows it: booleans as the API gives them, objects as compact JSON, nothing as -."""
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M")
    if isinstance(value, list | tuple) and all(isinstance(item, str) for item in value):
        return ", ".join(value) or "-"  # policies, names
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, separators=(",", ":"), default=_json_value) if value else "-"
    return str(value)


def _json_value(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def output_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--json`` and ``--wide``, on every command that lists or shows."""
    func = click.option(
        "--wide", is_flag=True, help="On a terminal, show every column (the table may then be wider than it)."
    )(func)
    return json_option(func)


def json_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON (for scripts) instead of a table.")(func)


def print_json(document: Any) -> None:
    click.echo(json.dumps(document, indent=2, default=_json_value))


def terminal_width() -> int | None:
    """The terminal's width when standard output is one (COLUMNS, when set, wins); None for a pipe or a file."""
    if not sys.stdout.isatty():
        return None
    return shutil.get_terminal_size().columns


def table(
    columns: Sequence[Column],
    rows: Iterable[Row],
    *,
    wide: bool = False,
    title: str | None = None,
    empty: str | None = None,
    header: bool = True,
) -> None:
    """Print ``rows`` in the layout of standard output (a terminal's width, or tab-separated). On a terminal,
    no rows print ``empty`` when given; a pipe gets the header line alone."""
    width = terminal_width()
    rows = list(rows)
    if title is not None:
        click.echo(title)
    if not rows and empty is not None and width is not None:
        click.echo(empty)
        return
    lines, hidden = layout(columns, rows, width, wide)
    lines = lines if header else lines[1:]
    click.echo("\n".join(lines))
    if hidden:
        shown_order = [column.header for column in columns if column.header in hidden]
        click.echo(f"(--wide shows {len(hidden)} more column(s): {', '.join(shown_order)})", err=True)


def record(fields: Iterable[tuple[str, Any]], *, wide: bool = False, title: str | None = None) -> None:
    """Print one record: a ``field value`` line per field (no header line; times said to be UTC)."""
    rows = [
        {"field": name, "value": f"{text(value)} UTC" if isinstance(value, datetime) else value}
        for name, value in fields
    ]
    table(RECORD, rows, wide=wide, title=title, header=False)


RECORD = (Column("field", "field", identifier=True), Column("value", "value"))


def layout(
    columns: Sequence[Column], rows: list[Row], width: int | None, wide: bool = False
) -> tuple[list[str], list[str]]:
    """The lines of the table, and the headers of the columns dropped to fit ``width`` (None: tab-separated,
    every column)."""
    cells = [[_one_line(column.text(row)) for column in columns] for row in rows]
    if width is None:
        return ["\t".join(column.header for column in columns), *("\t".join(line) for line in cells)], []
    shown = list(range(len(columns)))
    natural = [max([len(columns[i].header), *(len(line[i]) for line in cells)]) for i in shown]

    def needed(indexes: list[int], widths: dict[int, int]) -> int:
        return sum(widths[i] for i in indexes) + GAP * (len(indexes) - 1)

    def squeezed(indexes: list[int]) -> int:  # the narrowest the table can be: identifiers whole, others narrowed
        return needed(
            indexes, {i: natural[i] if columns[i].identifier else min(natural[i], NARROWEST) for i in indexes}
        )

    hidden: list[str] = []

    def drop(i: int) -> None:
        shown.remove(i)
        hidden.append(columns[i].header)

    if not wide:
        # Optional columns go first, so rows stay one line; then, when even narrowed the table cannot fit,
        # the rightmost columns that are not identifiers.
        while needed(shown, dict(enumerate(natural))) > width and any(columns[i].optional for i in shown):
            drop([i for i in shown if columns[i].optional][-1])
        while squeezed(shown) > width and any(not columns[i].identifier for i in shown):
            drop([i for i in shown if not columns[i].identifier][-1])
    widths = _fitted(columns, shown, natural, width)
    lines = []
    for line in [[column.header for column in columns], *cells]:
        wrapped = [_wrapped(line[i], widths[i]) if not columns[i].identifier else [line[i]] for i in shown]
        for depth in range(max(len(parts) for parts in wrapped)):
            parts = [part[depth] if depth < len(part) else "" for part in wrapped]
            lines.append((" " * GAP).join(p.ljust(widths[i]) for p, i in zip(parts, shown, strict=True)).rstrip())
    return lines, hidden


def _fitted(columns: Sequence[Column], shown: list[int], natural: list[int], width: int) -> dict[int, int]:
    """Each shown column's width: identifiers their whole width; the others share what is left, the
    narrowest first getting all they need (never less than NARROWEST, even when the table then overflows)."""
    widths = {i: natural[i] for i in shown}
    flexible = sorted((i for i in shown if not columns[i].identifier), key=lambda i: natural[i])
    room = width - GAP * (len(shown) - 1) - sum(natural[i] for i in shown if columns[i].identifier)
    for position, i in enumerate(flexible):
        share = room // (len(flexible) - position)
        widths[i] = max(min(natural[i], share), min(natural[i], NARROWEST))
        room -= widths[i]
    return widths


def _one_line(value: str) -> str:
    return " ".join(value.split()) if ("\t" in value or "\n" in value) else value


def _wrapped(value: str, width: int) -> list[str]:
    if len(value) <= width:
        return [value]
    return textwrap.wrap(value, width, break_on_hyphens=False) or [""]
