"""What every command module shares: the group's one-line errors, running a coroutine with those errors,
the options made from the settings table (settings.py), the database options, and opening the service.

A command that does not serve should answer at once: the command modules import only click and the light
modules at load time (``--help`` and ``--version`` need no more), and the service, the database libraries and
the crypto libraries inside the command functions that use them (tests/test_cli_startup.py holds the budget).
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from kms_service import logs
from kms_service.errors import ConfigError, KMSError
from kms_service.settings import SETTING_BY_NAME, Setting, Settings

if TYPE_CHECKING:
    from kms_service.config import ServiceConfig
    from kms_service.service import KMS

T = TypeVar("T")
Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def run(coro: Awaitable[T]) -> T:
    """Run ``coro``; a failure the user can cause or fix (configuration, master key, the database or the
    disk) ends the command with one line on stderr, never a traceback."""
    import asyncio

    return checked(lambda: asyncio.run(coro))


def checked(action: Callable[[], T]) -> T:
    """``action()``, its failures as ``run``'s: one line on stderr."""
    from sqlalchemy.exc import DBAPIError

    from kms_service.storage.database import describe_fault

    try:
        return action()
    except KMSError as exc:
        raise click.ClickException(exc.message) from None
    except (DBAPIError, OSError, TimeoutError) as exc:
        raise click.ClickException(describe_fault(exc)) from None


class Group(click.Group):
    """Usage errors (a bad flag, a missing argument) are one line on stderr and exit 2, as every other
    error is one line and exit 1."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["standalone_mode"] = False
        try:
            result = super().main(*args, **kwargs)
        except click.UsageError as exc:
            command = exc.ctx.command_path if exc.ctx is not None else "kms-service"
            click.echo(f"Error: {exc.format_message()} (see '{command} --help')", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            click.echo(f"Error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(1)
        sys.exit(result if isinstance(result, int) else 0)


def checked_database_url(database_url: str | None, data_dir: Path) -> str:
    """The database URL, checked: a malformed one is one line, before anything is opened."""
    from sqlalchemy.engine import make_url

    from kms_service.storage.database import default_database_url, normalize_database_url

    url = database_url or default_database_url(data_dir)
    try:
        normalize_database_url(url)
        make_url(url).port  # noqa: B018 - a port that is not a number raises here, not at connect
    except ConfigError as exc:
        raise click.BadParameter(exc.message, param_hint="--database-url") from None
    except ValueError:
        raise click.BadParameter(
            "invalid database URL (its port is not a number)", param_hint="--database-url"
        ) from None
    return url


def with_kms(database_url: str | None, data_dir: Path, action: Callable[[KMS], Awaitable[T]]) -> T:
    """Open the service (migrating the database, checking the master key), run ``action``, close. The
    database must exist: only serve and migrate create one."""
    from kms_service.service import KMS

    url = checked_database_url(database_url, data_dir)

    async def opened() -> T:
        async with KMS.session(Settings(data_dir=data_dir, database_url=url), create=False) as kms:
            return await action(kms)

    return run(opened())


def reading(database_url: str | None, data_dir: Path, action: Callable[[Any], Awaitable[T]]) -> T:
    """For commands that only read: the database as it is (never created or migrated; no master key). The
    service itself is not loaded: ``action`` reads through the storage layer."""
    from kms_service.storage.revisions import open_existing

    url = checked_database_url(database_url, data_dir)

    async def opened() -> T:
        db = await open_existing(url)
        try:
            return await action(db)
        finally:
            await db.engine.dispose()

    return run(opened())


def load_config(path: Path) -> ServiceConfig:
    from kms_service.config import load_service_config

    try:
        return load_service_config(path)
    except ConfigError as exc:
        raise click.ClickException(exc.message) from None


def _set_logging(ctx: click.Context, param: click.Parameter, value: str) -> str:
    ctx.meta[f"kms_{param.name}"] = value
    logs.setup(ctx.meta.get("kms_log_format", "text"), ctx.meta.get("kms_log_level", "info"))
    return value


def log_options(ctx: click.Context) -> tuple[str, str]:
    """The command's --log-format and --log-level."""
    return ctx.meta.get("kms_log_format", "text"), ctx.meta.get("kms_log_level", "info")


def logging_options(func: Callable[..., Any] | None = None, *, level: str = "warning") -> Any:
    """--log-format and --log-level, on every command (logging is set up before the command runs). A command
    logs warnings only unless asked (its result is its output); serve passes ``level="info"``."""
    if func is None:
        return lambda decorated: logging_options(decorated, level=level)
    func = click.option(
        "--log-level",
        envvar="KMS_LOG_LEVEL",
        show_envvar=True,
        type=click.Choice(logs.LEVELS),
        default=level,
        show_default=True,
        expose_value=False,
        is_eager=True,
        callback=_set_logging,
        help="debug also shows the libraries' lines (Alembic's migrations).",
    )(func)
    return click.option(
        "--log-format",
        envvar="KMS_LOG_FORMAT",
        show_envvar=True,
        type=click.Choice(logs.FORMATS),
        default="text",
        show_default=True,
        expose_value=False,
        is_eager=True,
        callback=_set_logging,
        help="json: one JSON object per line on standard error.",
    )(func)


def _duration(value: Any) -> int:
    from kms_service.config import parse_duration

    if isinstance(value, int):
        return value
    try:
        return parse_duration(str(value))
    except ConfigError as exc:
        raise click.BadParameter(exc.message) from None


def duration_text(seconds: int) -> str:
    """How a duration default is shown (whole hours, as the tokens' TTLs are usually given)."""
    return f"{seconds // 3600}h" if seconds % 3600 == 0 else f"{seconds}s"


def _option(setting: Setting) -> Decorator:
    """The click option of ``setting``."""
    declared: dict[str, Any] = {"envvar": setting.envvar, "show_envvar": True, "help": setting.help}
    flag = setting.flag
    if setting.kind is bool:
        if setting.negatable:
            flag = f"{flag}/--no-{flag.removeprefix('--')}"
            declared.update(default=setting.default, show_default=True)
        else:  # a plain flag is off unless given: click shows no default for it
            declared.update(is_flag=True, default=setting.default)
        return click.option(flag, setting.name, **declared)
    declared.update(required=setting.required, show_default=True)
    if setting.duration:
        declared.update(default=duration_text(setting.default), callback=lambda _ctx, _param, value: _duration(value))
    elif setting.default is not None:  # click takes default=None for a default given (a required one then fails)
        declared["default"] = setting.default
    if setting.kind is Path:
        file_okay, dir_okay = setting.path_kind != "dir", setting.path_kind != "file"
        declared["type"] = click.Path(path_type=Path, file_okay=file_okay, dir_okay=dir_okay)
    elif setting.kind is int and not setting.duration:
        declared["type"] = click.IntRange(setting.minimum, setting.maximum)
    elif setting.kind is float:
        declared["type"] = click.FloatRange(setting.minimum, setting.maximum)
    return click.option(flag, setting.name, **declared)


def setting_options(*settings: Setting) -> Decorator:
    """The options of ``settings``, shown in the order given."""

    def apply(func: Callable[..., Any]) -> Callable[..., Any]:
        for setting in reversed(settings):  # click shows the last decorator applied first
            func = _option(setting)(func)
        return func

    return apply


def database_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """--database-url and --data-dir (then the logging options), on every command that opens the database."""
    return setting_options(SETTING_BY_NAME["database_url"], SETTING_BY_NAME["data_dir"])(logging_options(func))


max_token_ttl_option = setting_options(SETTING_BY_NAME["max_token_ttl"])
default_token_ttl_option = setting_options(SETTING_BY_NAME["default_token_ttl"])


class Progress:
    """Progress of a long command on standard error: a bar (rich.progress) when stderr is a terminal, else
    plain lines a log keeps (``[3/10] name: ...``), or none (``lines=False``). Use as a context manager."""

    def __init__(self, description: str, total: int, lines: bool = True) -> None:
        self._bar: Any = None
        if sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
            from rich.progress import Progress as Bar

            columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
            self._bar = Bar(*columns, console=Console(stderr=True), transient=False)
            self._task = self._bar.add_task(description, total=total)
        elif lines:
            click.echo(description, err=True)

    def __enter__(self) -> Progress:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def step(self, index: int, total: int, text: str, finished: bool) -> None:
        """One key of migrate-from/-to (``migration.Progress``): finished ones print their line above the bar."""
        if self._bar is None:
            click.echo(f"[{index}/{total}] {text}", err=True)
        elif finished:
            self._bar.console.print(f"[{index}/{total}] {text}", markup=False, highlight=False)
            self._bar.advance(self._task)
        else:
            self._bar.update(self._task, description=text)

    def advance(self, count: int) -> None:
        if self._bar is not None:
            self._bar.advance(self._task, count)
