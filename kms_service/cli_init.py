"""``kms-service init [DIR]``: an example services YAML and app YAML to start from (the package's own,
kms_service/examples/), and the commands that use them, printed with absolute paths."""

from __future__ import annotations

import shlex
from importlib import resources
from pathlib import Path

import click

from kms_service.cli_common import logging_options

# What init writes: the file's name in DIR, the package's example it copies.
EXAMPLES = (("services.yaml", "services.yaml"), ("app.yaml", "app.yaml"))


def example_text(name: str) -> str:
    return resources.files("kms_service").joinpath("examples", name).read_text(encoding="utf-8")


@click.command()
@click.argument("directory", default=".", type=click.Path(file_okay=False, path_type=Path))
@logging_options
def init(directory: Path) -> None:
    """Write an example services YAML and app YAML into DIRECTORY (default: here); never overwrites."""
    folder = directory.absolute()
    targets = [(folder / name, example) for name, example in EXAMPLES]
    present = [str(path) for path, _ in targets if path.exists()]
    if present:
        raise click.ClickException(f"{', '.join(present)}: already there; nothing was written (init never overwrites)")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for path, example in targets:
            path.write_text(example_text(example), encoding="utf-8")
    except OSError as exc:
        raise click.ClickException(f"{exc.filename or folder}: {exc.strerror or exc}") from None
    from kms_service.serving import runnable_program  # the server side: loaded by the commands that need it

    services, app = (shlex.quote(str(path)) for path, _ in targets)
    data_dir = shlex.quote(str(folder / "data"))
    click.echo(
        f"wrote {services} (the services YAML: keys, endpoints and their grants)\n"
        f"  and {app} (an app's relationships to those endpoints)\n"
        "serve them (SQLite and master.key in the data directory; its start banner prints the next commands):\n"
        f"  {runnable_program()} serve --config {services} --data-dir {data_dir}"
    )
