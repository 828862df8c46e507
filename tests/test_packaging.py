"""The wheel, as a user installs it: built from this tree, installed into a fresh venv, and run from a
directory outside the checkout (so nothing of the checkout is importable), on SQLite and on PostgreSQL.

The wheel and the venv are made once per module; the database tests then take a few seconds each.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from alembic.script import ScriptDirectory
from processes import ServeProcess, run_cli

from kms_service.storage.migrate import MIGRATIONS_DIR, alembic_config

# Long: `make test` runs the slow group after the rest.
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "kms_service"
MIGRATIONS = ROOT / "migrations"  # installed as kms_service.migrations
SEED_CONFIG = ROOT / "deploy" / "services.example.yaml"
# Never part of a build: the developer's venv, VCS data, caches and earlier build output. (Copying the tree
# first keeps setuptools' build/ and *.egg-info out of the checkout, and stale build/ files out of the wheel.)
NOT_SOURCE = {".venv", ".git", "data", "build", "dist", "__pycache__", ".pytest_cache", ".ruff_cache", ".hypothesis"}
INSTALL_TIMEOUT = 600  # pip fetches the runtime dependencies (from its cache when warm)


def _check(cmd: list[str], **kwargs) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=INSTALL_TIMEOUT, **kwargs
    )
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def _clean_env() -> dict[str, str]:
    """The environment without anything that would point Python or kms-service back at the checkout."""
    drop = {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"}
    return {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("KMS_")}


@dataclass(frozen=True)
class Installed:
    bin: Path  # the fresh venv's bin/
    outside: Path  # a working directory outside the source tree
    version: str  # the wheel's version, from its METADATA

    @property
    def command(self) -> list[str]:
        return [str(self.bin / "kms-service")]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    shutil.copytree(
        ROOT,
        source,
        ignore=lambda _dir, names: [n for n in names if n in NOT_SOURCE or n.endswith(".egg-info")],
    )
    # No build isolation: the backend (setuptools, a test extra) is already here, so this needs no network.
    _check(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-input",
            "--quiet",
            "--wheel-dir",
            str(work / "dist"),
            str(source),
        ],
        cwd=work,
    )
    wheels = list((work / "dist").glob("*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def _metadata_version(wheel: Path) -> str:
    with zipfile.ZipFile(wheel) as archive:
        [metadata] = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        text = archive.read(metadata).decode()
    return re.search(r"^Version: (\S+)$", text, re.MULTILINE).group(1)


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Installed:
    venv = tmp_path_factory.mktemp("venv") / "venv"
    outside = tmp_path_factory.mktemp("outside")
    assert not outside.is_relative_to(ROOT)
    env = _clean_env()
    _check([sys.executable, "-m", "venv", str(venv)], cwd=outside, env=env)
    python = venv / "bin" / "python"
    _check([str(python), "-m", "pip", "install", "--no-input", "--quiet", str(wheel)], cwd=outside, env=env)
    # The point of all this: the code that runs is the wheel's, not the checkout's.
    where = _check([str(python), "-c", "import kms_service; print(kms_service.__file__)"], cwd=outside, env=env)
    module = Path(where.stdout.strip())
    assert module.is_relative_to(venv) and not module.is_relative_to(ROOT), module
    return Installed(bin=venv / "bin", outside=outside, version=_metadata_version(wheel))


def test_wheel_holds_the_package_its_migrations_and_nothing_else(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    version = _metadata_version(wheel)
    dist_info = f"kms_service-{version}.dist-info"

    assert {name.split("/")[0] for name in names} == {"kms_service", dist_info}

    # Every file of the package's source tree, .py or not, is in the wheel (and the wheel has no others): a
    # data file left out of package-data is exactly how script.py.mako would go missing, and a package left
    # out of pyproject's list, how a whole directory would. migrations/ installs as kms_service/migrations/.
    source = {
        f"{installed_as}/{path.relative_to(tree).as_posix()}"
        for tree, installed_as in ((PACKAGE, "kms_service"), (MIGRATIONS, "kms_service/migrations"))
        for path in tree.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }
    packaged = {name for name in names if name.startswith("kms_service/")}
    assert sorted(source - packaged) == [], "in the source tree but not in the wheel"
    assert sorted(packaged - source) == [], "in the wheel but not in the source tree"

    migrations = "kms_service/migrations"
    revisions = sorted(path.name for path in (MIGRATIONS_DIR / "versions").glob("0*.py"))
    assert revisions, "no revision files found"
    for name in [f"{migrations}/env.py", f"{migrations}/script.py.mako"] + [
        f"{migrations}/versions/{rev}" for rev in revisions
    ]:
        assert name in names

    # The console's files (package data, no build step) are in the wheel: it serves them from there.
    console = {path.name for path in (PACKAGE / "web" / "console").iterdir()}
    assert {"index.html", "main.js", "console.css"} <= console
    assert {f"kms_service/web/console/{name}" for name in console} <= names

    # The example YAML files `kms-service init` writes (package data).
    assert {"kms_service/examples/services.yaml", "kms_service/examples/app.yaml"} <= names

    # The license travels with the wheel, and so do the type hints (PEP 561).
    assert "kms_service/py.typed" in names and f"{dist_info}/licenses/LICENSE" in names
    with zipfile.ZipFile(wheel) as archive:
        metadata = archive.read(f"{dist_info}/METADATA").decode()
        assert archive.read(f"{dist_info}/licenses/LICENSE") == (ROOT / "LICENSE").read_bytes()
    assert re.search(r"^License-Expression: Apache-2\.0$", metadata, re.MULTILINE), metadata[:500]

    with zipfile.ZipFile(wheel) as archive:
        entry_points = archive.read(f"{dist_info}/entry_points.txt").decode()
    assert re.search(r"^kms-service = kms_service\.cli:main$", entry_points, re.MULTILINE), entry_points


def test_pyproject_lists_every_package_of_the_tree() -> None:
    """The packages are listed in pyproject.toml (migrations/ is mapped into kms_service): a package added to
    the tree must be added there, or the wheel goes without it. Told here before any wheel is built."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert setuptools["package-dir"] == {"kms_service.migrations": "migrations"}
    tree = {
        ".".join(prefix + init.parent.relative_to(ROOT).parts)
        for directory, prefix in ((PACKAGE, ()), (MIGRATIONS, ("kms_service",)))
        for init in directory.rglob("__init__.py")
    }
    assert sorted(tree - set(setuptools["packages"])) == [], "not in pyproject.toml's packages"
    assert sorted(set(setuptools["packages"]) - tree) == [], "in pyproject.toml's packages but not in the tree"


def test_installed_version_is_the_wheels(installed: Installed) -> None:
    expected = f"kms-service, version {installed.version}"
    env = _clean_env()
    for command in (installed.command, [str(installed.bin / "python"), "-m", "kms_service"]):
        result = _check([*command, "--version"], cwd=installed.outside, env=env)
        assert result.stdout.strip() == expected, command


def test_developer_alembic_ini_and_the_packaged_config_see_the_same_revisions() -> None:
    packaged = ScriptDirectory.from_config(alembic_config())
    revisions = [script.revision for script in packaged.walk_revisions()]
    assert len(revisions) == len(list((MIGRATIONS_DIR / "versions").glob("0*.py")))

    history = _check([sys.executable, "-m", "alembic", "-c", "alembic.ini", "history"], cwd=ROOT, env=_clean_env())
    listed = re.findall(r"-> (\w+)", history.stdout)
    assert listed == revisions
    assert f"-> {packaged.get_current_head()} (head)" in history.stdout


def test_installed_init_writes_the_packaged_examples(installed: Installed, tmp_path: Path) -> None:
    target = tmp_path / "start"
    result = run_cli(["init", str(target)], _clean_env(), command=installed.command, cwd=installed.outside)
    for name in ("services.yaml", "app.yaml"):
        assert (target / name).read_text() == (PACKAGE / "examples" / name).read_text(), name
    assert f"serve --config {target / 'services.yaml'} --data-dir {target / 'data'}" in result.stdout


def test_installed_command_migrates_issues_a_token_and_serves(
    installed: Installed, database_url: str, tmp_path: Path
) -> None:
    env = {**_clean_env(), "KMS_DATABASE_URL": database_url, "KMS_DATA_DIR": str(tmp_path / "data")}
    run = {"command": installed.command, "cwd": installed.outside}

    assert "is at the newest schema revision" in run_cli(["migrate"], env, **run).stdout

    created = run_cli(["token", "create", "--policy", "root", "--ttl", "1h"], env, **run).stdout.splitlines()
    token = created[-1]
    assert re.fullmatch(r"kms\.[A-Za-z0-9_-]{43}", token), created  # "kms." + 32 bytes, base64url
    [accessor] = [line.removeprefix("accessor: ") for line in created if line.startswith("accessor: ")]

    server = ServeProcess(SEED_CONFIG, env, **run)
    try:
        health = requests.get(f"{server.url}/v1/sys/health", timeout=10)
        assert health.status_code == 200
        console = requests.get(f"{server.url}/ui/", timeout=10)  # served from the installed package
        assert console.status_code == 200 and 'integrity="sha384-' in console.text
        assert health.json()["kms_service_version"] == installed.version
        # The token made by one process works against the server (same database, same master key) ...
        headers = {"X-Vault-Token": token}
        me = requests.get(f"{server.url}/v1/auth/token/lookup-self", headers=headers, timeout=10).json()["data"]
        assert (me["accessor"], me["policies"]) == (accessor, ["root"])
        # ... and the installed crypto works: sign with the key the example config provisions, then verify.
        payload = {"input": "U0VDUkVUCg=="}
        signed = requests.post(f"{server.url}/v1/transit/sign/vault-sign", json=payload, headers=headers, timeout=10)
        assert signed.status_code == 200, signed.text
        payload["signature"] = signed.json()["data"]["signature"]
        verified = requests.post(
            f"{server.url}/v1/transit/verify/vault-sign", json=payload, headers=headers, timeout=10
        )
        assert verified.json()["data"] == {"valid": True}
    finally:
        output = server.stop(signal.SIGTERM)
    assert server.proc.returncode == 0, output
    assert "Traceback" not in output, output
