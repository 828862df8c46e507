"""The operator's key writes: ``keys create``, ``rotate``, ``config``, ``delete`` and the bulk ``rewrap``.

They go through the service (``KeyService``) as the HTTP paths do, so a creation, a rotation, a config change
or a deletion takes the same lock, obeys the same rules (and refuses in the same words) and reaches every
running node and worker the same way (the change notification of its transaction). Readable output, or
``--json`` (Vault's key body) for scripts.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import click

from kms_service.cli_common import Progress, database_options, with_kms
from kms_service.cli_inspect import keys
from kms_service.cli_output import json_option, output_options, print_json, record, text
from kms_service.mounts import DEFAULT_MOUNT

if TYPE_CHECKING:
    from kms_service.keyring import Key
    from kms_service.service import KMS
    from kms_service.service.keys import KeyService
    from kms_service.service.usage import KeyUse

# Ciphertexts rewrapped per key lookup and usage reservation (and per step of the progress bar).
REWRAP_CHUNK = 1000


def mount_option(func: Any) -> Any:
    return click.option(
        "--mount", default=DEFAULT_MOUNT, show_default=True, help="The transit mount holding the key (e.g. teams/eu)."
    )(func)


async def _key_service(kms: KMS, mount: str) -> KeyService:
    return kms.mounts.key_service(await kms.mounts.read(mount))


async def _existing(kms: KMS, mount: str, name: str) -> tuple[KeyService, Key]:
    from kms_service.errors import InvalidRequest

    keys = await _key_service(kms, mount)
    key = await keys.get(name, ())
    if key is None:
        raise InvalidRequest(f"no key named {name} in {mount}/")
    return keys, key


def _show(key: Key, as_json: bool, wide: bool, headline: str, warnings: list[str] | None = None) -> None:
    for warning in warnings or ():
        click.echo(f"Warning: {warning}", err=True)
    if as_json:
        print_json(key.body())
        return
    click.echo(headline)
    record(((field, value) for field, value in key.body().items() if field != "keys"), wide=wide)


def _period(value: str) -> int:
    """A duration as Vault's config reads it (0 allowed: no auto-rotation)."""
    from kms_service.durations import DurationError, parse_seconds

    try:
        return parse_seconds(value)
    except DurationError as exc:
        raise click.BadParameter(str(exc)) from None


def _period_option(value: str | None) -> int | None:
    return None if value is None else _period(value)


@keys.command("create")
@click.argument("name")
@mount_option
@click.option(
    "--type",
    "key_type",
    help="The key type, as Vault names it: aes256-gcm96 (the default, as Vault's), chacha20-poly1305, "
    "ed25519, ecdsa-p256, rsa-2048, hmac...",
)
@click.option("--exportable", is_flag=True, help="The key may be exported (cannot be undone).")
@click.option(
    "--allow-plaintext-backup", is_flag=True, help="The key may be backed up in plaintext (cannot be undone)."
)
@click.option("--derived", is_flag=True, help="Each encryption derives a key from a context.")
@click.option(
    "--convergent-encryption", is_flag=True, help="With --derived: the same plaintext and context encrypt alike."
)
@click.option(
    "--auto-rotate-period",
    callback=lambda _ctx, _param, value: _period_option(value),
    help="Rotate automatically after this long (e.g. 720h, 30d; at least 1h).",
)
@click.option("--key-size", type=int, default=0, help="hmac keys: the key's size in bytes (0: 32).")
@output_options
@database_options
def keys_create(
    name: str,
    mount: str,
    key_type: str | None,
    key_size: int,
    as_json: bool,
    wide: bool,
    database_url: str | None,
    data_dir: Path,
    **flags: Any,
) -> None:
    """Create key NAME, as Vault's keys/NAME does. A key of that name is left as it is (Vault's rule)."""
    from kms_service.keyring import KeySettings, validate_key_name
    from kms_service.keytypes.registry import DEFAULT_KEY_TYPE, canonical_type

    mount = mount.strip("/")
    auto_rotate_period = flags.pop("auto_rotate_period") or 0

    async def create(kms: KMS) -> tuple[Key, bool]:
        validate_key_name(name)
        type_name = canonical_type(key_type or DEFAULT_KEY_TYPE)
        settings = KeySettings.for_new_key(type_name, key_size=key_size, auto_rotate_period=auto_rotate_period, **flags)
        keys = await _key_service(kms, mount)
        existed = await keys.get(name, ()) is not None
        return await keys.upsert(name, type_name, settings, key_size), existed

    key, existed = with_kms(database_url, data_dir, create)
    if existed:
        headline = f"key {name} already exists in {mount}/ ({key.key_type.name}): left as it is"
    else:
        headline = f"created key {name} in {mount}/ ({key.key_type.name})"
    _show(key, as_json, wide, headline)


@keys.command("rotate")
@click.argument("name")
@mount_option
@output_options
@database_options
def keys_rotate(name: str, mount: str, as_json: bool, wide: bool, database_url: str | None, data_dir: Path) -> None:
    """Add a new version to key NAME (Vault's keys/NAME/rotate); new encryptions and signatures use it."""
    mount = mount.strip("/")

    async def rotate(kms: KMS) -> Key:
        keys, _key = await _existing(kms, mount, name)
        return await keys.rotate(name)

    key = with_kms(database_url, data_dir, rotate)
    _show(key, as_json, wide, f"rotated key {name} in {mount}/ to version {key.latest_version}")


@keys.command("config")
@click.argument("name")
@mount_option
@click.option("--min-decryption-version", type=int, help="The oldest version that may still decrypt/verify.")
@click.option(
    "--min-encryption-version", type=int, help="The oldest version encrypt/sign may be asked for (0: latest)."
)
@click.option("--deletion-allowed", type=click.BOOL, help="true|false: whether the key may be deleted.")
@click.option("--exportable", type=click.BOOL, help="true: the key may be exported (one-way: cannot be undone).")
@click.option(
    "--allow-plaintext-backup", type=click.BOOL, help="true: the key may be backed up in plaintext (one-way)."
)
@click.option(
    "--auto-rotate-period",
    callback=lambda _ctx, _param, value: _period_option(value),
    help="Rotate automatically after this long (e.g. 720h, 30d; 0: never; at least 1h).",
)
@click.option("--retain-versions", type=int, help="Keep only the newest N versions decryptable (0: all).")
@output_options
@database_options
def keys_config(
    name: str,
    mount: str,
    as_json: bool,
    wide: bool,
    database_url: str | None,
    data_dir: Path,
    **fields: Any,
) -> None:
    """Change key NAME's settings, as Vault's keys/NAME/config: only the options given change."""
    from kms_service.keyring import KeyConfigChange

    change = KeyConfigChange(**fields)
    if all(value is None for value in fields.values()):
        raise click.UsageError("nothing to change: give at least one setting (see --help)")
    mount = mount.strip("/")

    async def configure(kms: KMS) -> tuple[Key, list[str]]:
        return await (await _key_service(kms, mount)).configure(name, change)

    key, warnings = with_kms(database_url, data_dir, configure)
    changed = ", ".join(f"{field}={text(value)}" for field, value in fields.items() if value is not None)
    _show(key, as_json, wide, f"configured key {name} in {mount}/: {changed}", warnings)


@keys.command("delete")
@click.argument("name")
@mount_option
@json_option
@database_options
def keys_delete(name: str, mount: str, as_json: bool, database_url: str | None, data_dir: Path) -> None:
    """Delete key NAME and every version of it, for good (Vault's DELETE keys/NAME): only a key whose
    deletion_allowed is true ('keys config NAME --deletion-allowed true')."""
    mount = mount.strip("/")

    async def delete(kms: KMS) -> None:
        keys, _key = await _existing(kms, mount, name)
        await keys.delete(name)

    with_kms(database_url, data_dir, delete)
    if as_json:
        print_json({"deleted": name, "mount": mount})
        return
    click.echo(f"deleted key {name} in {mount}/")


def _rewrap_chunk(use: KeyUse, lines: list[str], first_line: int) -> tuple[list[str], int]:
    """The rewrapped lines, and how many were rewrapped."""
    from kms_service.errors import InvalidRequest, KMSError
    from kms_service.keytypes import EncryptOptions

    out, done = [], 0
    for number, line in enumerate(lines, first_line):
        if not line:
            out.append("")  # a blank line stays blank, so output lines match input lines
            continue
        try:
            ciphertext, _version = use.rewrap(line, EncryptOptions())
        except KMSError as exc:
            # The domain's texts never echo the value they refuse; neither does this line.
            raise InvalidRequest(f"line {number}: {exc.message}") from None
        out.append(ciphertext)
        done += 1
    return out, done


@click.command("rewrap")
@click.option("--key", "name", required=True, help="The key the ciphertexts were made with.")
@mount_option
@click.argument("ciphertexts", metavar="FILE", type=click.File("r", encoding="utf-8"))
@database_options
def rewrap(name: str, mount: str, ciphertexts: TextIO, database_url: str | None, data_dir: Path) -> None:
    """Rewrap every ciphertext in FILE (one per line, - for standard input) to key NAME's latest version,
    as Vault's transit/rewrap does; the new ones go to standard output, line for line.

    A line that does not rewrap stops the command (exit 1, naming its line number): standard output then
    holds the ciphertexts of the lines before its chunk of 1,000. Derived (context) keys are not supported."""
    from kms_service.errors import InvalidRequest, KMSError
    from kms_service.keyring import parse_versioned

    mount = mount.strip("/")
    lines = [line.strip() for line in ciphertexts.read().splitlines()]

    async def run(kms: KMS) -> tuple[int, int]:
        keys = await _key_service(kms, mount)
        done = 0
        version = 0
        what = f"rewrapping {len(lines)} ciphertext(s) with {mount}/{name}"
        with Progress(what, len(lines), lines=False) as progress:
            for start in range(0, len(lines), REWRAP_CHUNK):
                chunk = lines[start : start + REWRAP_CHUNK]
                versions = set()
                for number, line in enumerate(chunk, start + 1):
                    if line:
                        try:
                            versions.add(parse_versioned(line, "ciphertext").version)
                        except KMSError as exc:
                            raise InvalidRequest(f"line {number}: {exc.message}") from None
                key = await keys.get(name, (0, *versions))
                if key is None:
                    raise InvalidRequest(f"no key named {name} in {mount}/")
                if key.settings.soft_deleted:
                    raise InvalidRequest(f"key {name} is soft-deleted")
                async with kms.usage.using(key, keys, lambda w: click.echo(f"Warning: {w}", err=True)) as use:
                    rewrapped, rewrapped_count = _rewrap_chunk(use, chunk, start + 1)
                click.echo("\n".join(rewrapped))
                done += rewrapped_count
                version = key.latest_version
                progress.advance(len(chunk))
        return done, version

    done, version = with_kms(database_url, data_dir, run)
    click.echo(f"rewrapped {done} ciphertext(s) to {mount}/{name} version {version}", err=True)
