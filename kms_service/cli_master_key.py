"""``kms-service master-key rotate [--finish]`` and ``master-key status``: a new master key while servers
serve (``service/master_keys.py`` does the work; this module places the key files and tells the operator
what to do next)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import click

from kms_service.cli_common import database_options, with_kms
from kms_service.cli_output import json_option, print_json

if TYPE_CHECKING:
    from kms_service.seal import MasterKey
    from kms_service.service import KMS
    from kms_service.service.master_keys import Progress, Rollover, Status

# Rows re-sealed per transaction unless --batch-size says otherwise (service.master_keys.DEFAULT_BATCH_SIZE,
# kept here so --help needs no import of the service; tests/test_cli_startup.py checks they agree).
DEFAULT_BATCH_SIZE = 500


@click.group("master-key")
def master_key() -> None:
    """Rotate the master key (every row re-sealed while servers serve) and see where a rotation stands."""


@dataclass(frozen=True)
class Placed:
    """Where the new key went on this machine, and where the old one is kept."""

    new_key_file: Path | None  # None: this process's key source already holds it
    backup: Path | None
    from_env: bool


def _place_new_key(loaded: MasterKey, new: MasterKey, old_key_id: str, data_dir: Path) -> Placed:
    """master.key becomes the new key, the old one kept beside it as ``master.key.<old id>.old``. With
    KMS_MASTER_KEY the files are not ours to change: the new key goes to ``master.key.<new id>.new``."""
    from kms_service.seal import MASTER_KEY_ENV, MASTER_KEY_FILE

    if loaded.origin == MASTER_KEY_ENV:
        if loaded.key_id == new.key_id:
            return Placed(None, None, from_env=True)
        target = data_dir.absolute() / f"{MASTER_KEY_FILE}.{new.key_id}.new"
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        new.write_file(target)
        return Placed(target, None, from_env=True)
    path = Path(loaded.origin)
    backup = path.with_name(f"{path.name}.{old_key_id}.old")
    if loaded.key_id != new.key_id:
        if not backup.exists():
            loaded.write_file(backup)
        new.write_file(path)
    return Placed(path, backup if backup.exists() else None, from_env=False)


def _progress_line(progress: Progress) -> None:
    click.echo(f"re-sealed {progress.versions} key version(s) in {progress.batches} batch(es)")


@master_key.command("rotate")
@click.option(
    "--finish",
    is_flag=True,
    help="End the rotation under way: re-seal what is left, then retire the old key (it opens the database no "
    "more). Only with the new key: refused, changing nothing, when given the old one.",
)
@click.option(
    "--batch-size",
    type=click.IntRange(1, 100_000),
    default=DEFAULT_BATCH_SIZE,
    show_default=True,
    help="Rows re-sealed per transaction.",
)
@database_options
def rotate(finish: bool, batch_size: int, database_url: str | None, data_dir: Path) -> None:
    """Seal everything under a new master key while servers keep serving; run it again to resume.

    Without --finish: start a rotation (or resume the one under way), write the new key, re-seal every row.
    Servers keep working with the old key or the new one until --finish."""
    from kms_service.seal import MASTER_KEY_ENV
    from kms_service.service.master_keys import ADOPTION_BOUND

    if finish:
        _finish(database_url, data_dir, batch_size)
        return

    async def run(kms: KMS) -> tuple[Rollover, Placed, Progress]:
        rollover = await kms.master_keys.start()
        new = kms.master_key.get(rollover.new_key_id)
        assert new is not None
        placed = _place_new_key(kms.master_key.loaded, new, rollover.old_key_id, data_dir)
        click.echo(
            f"master-key rotation {rollover.old_key_id} → {rollover.new_key_id}: "
            f"{'resumed' if rollover.resumed else 'started'}; every node seals under {rollover.new_key_id} "
            f"within {ADOPTION_BOUND:g} s"
        )
        progress = await kms.master_keys.reseal(batch_size, _progress_line)
        return rollover, placed, progress

    rollover, placed, progress = with_kms(database_url, data_dir, run)
    click.echo(
        f"re-sealed {progress.versions} key version(s), {progress.secrets} server secret(s) and "
        f"{progress.wrapped_responses} wrapped response(s): every row is "
        f"sealed under master key {rollover.new_key_id}"
    )
    click.echo("")
    click.echo("Next:")
    if placed.from_env:
        if placed.new_key_file is not None:
            source = f"the new master key is in {placed.new_key_file}"
        else:
            source = f"{MASTER_KEY_ENV} already holds the new master key"
        click.echo(f"  1. Back up the new master key ({source}) now, somewhere other than this machine.")
        click.echo(
            f"  2. Set {MASTER_KEY_ENV} to the new key on every node (running nodes already use it; they need it at "
            "their next start)" + (f", then delete {placed.new_key_file}." if placed.new_key_file else ".")
        )
    else:
        click.echo(f"  1. Back up the new master key {placed.new_key_file} now, somewhere other than this machine.")
        if placed.backup is not None:
            click.echo(
                f"     The old one is kept as {placed.backup}: keep it as long as you keep database backups made "
                "before this rotation (only it opens them)."
            )
        click.echo(
            f"  2. Copy {placed.new_key_file} to every other node's data directory (or set {MASTER_KEY_ENV} to its "
            "content there). Running nodes already use it; they need it at their next start."
        )
    click.echo(
        "  3. Then run 'kms-service master-key rotate --finish' with the new key (it refuses the old one): until "
        "then the old key still opens the database."
    )


def _finish(database_url: str | None, data_dir: Path, batch_size: int) -> None:
    from kms_service.service.master_keys import ADOPTION_BOUND

    def waiting(seconds: float) -> None:
        click.echo(f"finishing in {seconds:.0f} s: {ADOPTION_BOUND:g} s after the start, every node has the new key")

    async def run(kms: KMS) -> tuple[str, str]:
        old_key_id = await kms.master_keys.finish(batch_size, _progress_line, waiting)
        return old_key_id, kms.master_key.key_id

    old_key_id, new_key_id = with_kms(database_url, data_dir, run)
    click.echo(
        f"master-key rotation finished: master key {old_key_id} is retired; the database opens only with "
        f"master key {new_key_id} (the key this command was given)"
    )


@master_key.command("status")
@json_option
@database_options
def status(as_json: bool, database_url: str | None, data_dir: Path) -> None:
    """Which master keys open the database, and how far a rotation has come."""

    async def run(kms: KMS) -> Status:
        return await kms.master_keys.status()

    result = with_kms(database_url, data_dir, run)
    if as_json:
        rollover = result.rollover
        print_json(
            {
                "accepted": result.accepted,
                "rollover": None
                if rollover is None
                else {
                    "old_key_id": rollover.old_key_id,
                    "new_key_id": rollover.new_key_id,
                    "started_at": rollover.started_at,
                },
                "remaining": result.remaining,
                "rows": result.rows,
            }
        )
        return
    click.echo(f"master keys accepted: {', '.join(result.accepted)}")
    if result.rollover is None:
        click.echo("rotation: none under way")
    else:
        rollover = result.rollover
        click.echo(
            f"rotation: {rollover.old_key_id} → {rollover.new_key_id} since "
            f"{rollover.started_at.isoformat(timespec='seconds')}; {result.remaining} row(s) left to re-seal"
            + ("" if result.remaining else " (run 'kms-service master-key rotate --finish')")
        )
    for table, counts in result.rows.items():
        shown = ", ".join(f"{key_id}: {n}" for key_id, n in sorted(counts.items())) or "none"
        click.echo(f"{table} sealed by master key: {shown}")
