"""``audit hash`` (a value as the audit log shows it) and ``audit verify`` (a log's chains against the
database's anchors)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
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


class Moment(click.ParamType):
    """An ISO 8601 date and time; without a time zone, UTC."""

    name = "TIME"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> datetime:
        if isinstance(value, datetime):
            return value
        try:
            moment = datetime.fromisoformat(str(value))
        except ValueError:
            self.fail(f"{str(value)[:40]!r} is not an ISO 8601 time (e.g. 2026-12-01T00:00:00Z)", param, ctx)
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@audit.command("verify")
@click.argument("files", nargs=-1, type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--db", "from_db", is_flag=True, default=False, help="Verify the audit_records table instead.")
@click.option(
    "--since",
    type=Moment(),
    default=None,
    help="The records given are those written from TIME on (earlier files are archived or gone): chains the "
    "database last anchored before TIME are not looked for, and chains begun before it may start at any seq. "
    "Without it every chain the database anchored must be there from its first record.",
)
@database_options
def audit_verify(
    files: tuple[Path, ...], from_db: bool, since: datetime | None, database_url: str | None, data_dir: Path
) -> None:
    """Check the chains of audit log FILES (a rotated log: every file, oldest first) against the anchors
    in the database: a record removed, moved or edited, records cut off the end, and records erased from the
    start (a chain the database anchored that is missing, or does not begin at seq 1, unless --since says
    where the records given begin) are reported with the last record up to which the log is intact. Exit
    status 1 when anything is wrong."""
    from kms_service import audit_records as audit_rules
    from kms_service.service.audit_log import anchors_of, verify_database
    from kms_service.storage import repository as repo

    if bool(files) == from_db:
        raise click.UsageError("give the audit log's FILES, or --db")

    async def check(kms: KMS) -> audit_rules.Verification:
        if from_db:
            return await verify_database(kms.db, kms.audit_keys, since)
        async with kms.db.reading() as session:
            anchors = anchors_of(await repo.audit_anchors(session), "file")
        return audit_rules.verify(_lines_of(files), kms.audit_keys.chain_key, anchors, since=since)

    result = with_kms(database_url, data_dir, check)
    for report in result.chains.values():
        span = f"seq {report.first_seq}..{report.verified_seq}" if report.verified_seq else "no record"
        if report.ok:
            click.echo(f"chain {report.id}: intact, {report.records} record(s), {span}; tail: {report.tail}")
        elif report.verified_seq:
            click.echo(
                f"chain {report.id}: BROKEN: {report.problem}; intact up to seq {report.verified_seq} "
                f"(line {report.verified_line})"
            )
        else:
            click.echo(f"chain {report.id}: BROKEN: {report.problem}")
    for number in result.unreadable:
        click.echo(f"line {number}: not an audit record (a torn write, or an edit)")
    if result.torn_end is not None:
        click.echo(f"line {result.torn_end}: the last record is incomplete (cut short by a crash)")
    where = "table" if from_db else "files given"
    for chain_id in result.absent:
        click.echo(
            f"chain {chain_id}: BROKEN: no records of chain {chain_id} in the {where}, though the database "
            "anchored it (name the files that hold it, or --since)"
        )
    if result.before_since:
        click.echo(f"{len(result.before_since)} chain(s) anchored last before --since: not looked for")
    if not result.chains and not result.absent:
        click.echo("no audit records")
    if not result.ok:
        raise SystemExit(1)


def _lines_of(files: tuple[Path, ...]) -> Iterator[bytes]:
    """The lines of ``files`` in order, read as they are checked (a log may be larger than memory)."""
    for path in files:
        with path.open("rb") as fh:
            yield from fh
