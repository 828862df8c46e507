"""``audit hash`` (a value as the audit log shows it) and ``audit verify`` (a log's chains against the
database's anchors)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import click

from kms_service.cli_common import database_options, with_kms

if TYPE_CHECKING:
    from kms_service import audit_records as audit_rules
    from kms_service.service import KMS


@click.group()
def audit() -> None:
    """The audit log: hash a value to search for it, verify a log's chains."""


@audit.command("hash")
@click.argument("value")
@database_options
def audit_hash(value: str, database_url: str | None, data_dir: Path) -> None:
    """Print VALUE as the audit log shows it (hmac-sha256:...), to search the log for it. A plaintext or
    context is hashed as sent: its base64."""

    async def hashed(kms: KMS) -> str:
        return kms.audit_keys.hash(value)

    click.echo(with_kms(database_url, data_dir, hashed))


@audit.command("verify")
@click.argument("files", nargs=-1, type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--db", "from_db", is_flag=True, default=False, help="Verify the audit_records table instead.")
@database_options
def audit_verify(files: tuple[Path, ...], from_db: bool, database_url: str | None, data_dir: Path) -> None:
    """Check the chains of audit log FILES (a rotated log: every file, oldest first) against the anchors
    in the database: a record removed, moved or edited, and records cut off the end, are reported with the
    last record up to which the log is intact. Exit status 1 when anything is wrong."""
    from kms_service import audit_records as audit_rules
    from kms_service.service.audit_log import verify_database
    from kms_service.storage import repository as repo

    if bool(files) == from_db:
        raise click.UsageError("give the audit log's FILES, or --db")

    async def check(kms: KMS) -> audit_rules.Verification:
        if from_db:
            return await verify_database(kms.db, kms.audit_keys)
        async with kms.db.reading() as session:
            anchors = {
                row.chain_id: audit_rules.Anchor(row.seq, row.hash, row.closed)
                for row in await repo.audit_anchors(session)
                if row.sink == "file"
            }
        result = audit_rules.verify(_lines_of(files), kms.audit_keys.chain_key, anchors)
        result.absent = sorted(set(anchors) - set(result.chains))
        return result

    result = with_kms(database_url, data_dir, check)
    for report in result.chains.values():
        span = f"seq {report.first_seq}..{report.verified_seq}" if report.verified_seq else "no record"
        if report.ok:
            click.echo(f"chain {report.id}: intact, {report.records} record(s), {span}; tail: {report.tail}")
        else:
            click.echo(
                f"chain {report.id}: BROKEN: {report.problem}; intact up to seq {report.verified_seq} "
                f"(line {report.verified_line})"
            )
    for number in result.unreadable:
        click.echo(f"line {number}: not an audit record (a torn write, or an edit)")
    if result.torn_end is not None:
        click.echo(f"line {result.torn_end}: the last record is incomplete (cut short by a crash)")
    for chain_id in result.absent:
        click.echo(f"chain {chain_id}: anchored in the database, no record here (in another file?)")
    if not result.chains and not result.absent:
        click.echo("no audit records")
    if not result.ok:
        raise SystemExit(1)


def _lines_of(files: tuple[Path, ...]) -> Iterator[bytes]:
    """The lines of ``files`` in order, read as they are checked (a log may be larger than memory)."""
    for path in files:
        with path.open("rb") as fh:
            yield from fh
