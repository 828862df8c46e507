"""``kms-service init`` writes the package's example YAML files, and ``serve``'s start banner prints commands
that run as printed from any directory: absolute paths, and the --data-dir / --database-url they need."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
from pathlib import Path

from processes import COMMAND, ServeProcess, run_cli

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "kms_service" / "examples"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KMS_", "VAULT_", "BAO_"))}
    return {**env, "KMS_WORKERS": "1", **extra}


def test_init_writes_the_examples_and_never_overwrites(tmp_path):
    target = tmp_path / "new" / "kms"
    result = run_cli(["init", str(target)], _env())
    assert (target / "services.yaml").read_text() == (EXAMPLES / "services.yaml").read_text()
    assert (target / "app.yaml").read_text() == (EXAMPLES / "app.yaml").read_text()
    assert f"--config {target / 'services.yaml'} --data-dir {target / 'data'}" in result.stdout
    assert result.stderr == ""

    (target / "app.yaml").write_text("relationships: {mine: 'vault-kms:manage_keys'}\n")
    again = run_cli(["init", str(target)], _env(), check=False)
    assert again.returncode == 1 and again.stderr.count("\n") == 1
    assert "already there; nothing was written" in again.stderr and str(target / "app.yaml") in again.stderr
    assert "mine" in (target / "app.yaml").read_text()  # untouched


def test_the_deploy_examples_are_the_packaged_ones():
    for deployed, packaged in (("services.example.yaml", "services.yaml"), ("app.example.yaml", "app.yaml")):
        assert (ROOT / "deploy" / deployed).read_text() == (EXAMPLES / packaged).read_text()


def _banner_commands(output: str) -> list[str]:
    commands = [line.strip() for line in output.splitlines() if " relationships --config " in line]
    commands += [line.split("an operator token: ", 1)[1] for line in output.splitlines() if "operator token:" in line]
    assert len(commands) == 2, output
    return commands


def test_the_banner_commands_run_as_printed_from_another_directory(database_url, tmp_path):
    """Started the way a newcomer does (init, then serve with relative paths); the banner's commands then run
    from elsewhere, with none of the server's variables: on SQLite from --data-dir alone, on PostgreSQL
    with the URL and the directory that holds master.key."""
    start, elsewhere = tmp_path / "start", tmp_path / "elsewhere"
    elsewhere.mkdir()
    run_cli(["init", str(start)], _env())
    postgres = not database_url.startswith("sqlite")
    env = _env(KMS_DATABASE_URL=database_url) if postgres else _env()
    output = ServeProcess(Path("services.yaml"), env, "--data-dir", "data", cwd=start).stop()
    assert "Traceback" not in output, output
    relationships, token_create = _banner_commands(output)
    assert f"--app {start / 'app.yaml'}" in relationships and f"--data-dir {start / 'data'}" in token_create
    assert ("--database-url postgresql://" in token_create) == postgres

    def run(command: str) -> str:
        done = subprocess.run(["bash", "-c", command], cwd=elsewhere, env=_env(), capture_output=True, text=True)
        assert done.returncode == 0 and "Error" not in done.stderr, (command, done.stderr)
        return done.stdout

    given = json.loads(base64.b64decode(run(relationships)))
    assert given["vault_secret"][0]["password"]
    assert re.fullmatch(r"\S+", run(token_create).strip().splitlines()[-1])
    assert not (elsewhere / "data").exists()  # nothing was made where the commands ran


def test_the_banner_without_an_app_yaml_names_an_endpoint_inline(tmp_path):
    """A services YAML with no app YAML beside it: the relationships command carries one inline."""
    folder = tmp_path / "cfg"
    folder.mkdir()
    (folder / "services.yaml").write_text((EXAMPLES / "services.yaml").read_text())
    data_dir = tmp_path / "data"
    output = ServeProcess(folder / "services.yaml", _env(), "--data-dir", str(data_dir), command=COMMAND).stop()
    relationships, _ = _banner_commands(output)
    assert "<(echo 'relationships: {app: \"vault-kms:manage_keys\"}')" in relationships
    done = subprocess.run(["bash", "-c", relationships], cwd=tmp_path, env=_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(base64.b64decode(done.stdout))["app"][0]["password"]


def test_the_banner_never_prints_a_database_password(tmp_path, monkeypatch):
    """A URL with a password is printed as the variable that holds it; the key's directory stays absolute."""
    from kms_service import serving
    from kms_service.config import load_service_config
    from kms_service.settings import Settings

    url = "postgresql://kms:s3cret-pw@db.internal/kms"
    config = EXAMPLES / "services.yaml"
    settings = Settings(
        database_url=url, data_dir=Path("data"), config_path=config, service=load_service_config(config)
    )
    monkeypatch.chdir(tmp_path)
    for environment in ({"KMS_DATABASE_URL": url}, {}):
        monkeypatch.delenv("KMS_DATABASE_URL", raising=False)
        for name, value in environment.items():
            monkeypatch.setenv(name, value)
        banner = serving._banner(settings, 8200, str(tmp_path / "data" / "master.key"))
        assert "s3cret-pw" not in banner, banner
        assert (
            f'token create --policy root --ttl 1h --database-url "$KMS_DATABASE_URL" --data-dir {tmp_path}/data'
            in banner
        )
        assert ("KMS_DATABASE_URL: the URL with its password" in banner) == (not environment), banner
    # With the key in KMS_MASTER_KEY the other commands read it too: no --data-dir for the key.
    banner = serving._banner(settings, 8200, "KMS_MASTER_KEY")
    [token_line] = [line for line in banner.splitlines() if "an operator token:" in line]
    assert token_line.endswith('--database-url "$KMS_DATABASE_URL"'), banner
