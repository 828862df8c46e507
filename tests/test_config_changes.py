"""Configuration changes are explicit: relationships never changes endpoints, serve refuses a services YAML
that drops endpoints unless --prune, and config check prints the plan and changes nothing."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
import requests
import yaml
from processes import ServeProcess, cli_env, run_cli, serve_exit

ROOT = Path(__file__).resolve().parents[1]
FULL = ROOT / "tests" / "data" / "services.yaml"


@pytest.fixture
def env(database_url, data_dir):
    return cli_env(database_url, data_dir)


@pytest.fixture
def partial(tmp_path) -> Path:
    """The tests' services YAML with only the crypto and signer endpoints."""
    document = yaml.safe_load(FULL.read_text())
    endpoints = document["kms"]["configuration"]["endpoints"]
    document["kms"]["configuration"]["endpoints"] = {name: endpoints[name] for name in ("crypto", "signer")}
    path = tmp_path / "partial.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def _app(tmp_path: Path, **relationships: str) -> Path:
    path = tmp_path / f"app-{'-'.join(relationships)}.yaml"
    path.write_text(yaml.safe_dump({"relationships": relationships}))
    return path


def _token(config: Path, app: Path, env: dict[str, str], port: int = 8200) -> str:
    value = run_cli(["relationships", "--config", str(config), "--app", str(app), "--port", str(port)], env)
    document = json.loads(base64.b64decode(value.stdout.strip()))
    return next(iter(document.values()))[0]["password"]


def _verify_works(url: str, token: str) -> int:
    """The status of a request any valid token may make (its own lookup): 200 valid, 403 not."""
    return requests.get(f"{url}/v1/auth/token/lookup-self", headers={"X-Vault-Token": token}, timeout=10).status_code


def test_relationships_never_changes_endpoints(env, partial, tmp_path):
    server = ServeProcess(FULL, env)
    try:
        verifier = _token(FULL, _app(tmp_path, v="kms:verifier"), env, server.port)
        # A partial services YAML given to relationships: the database's endpoints stay as they are.
        _token(partial, _app(tmp_path, c="kms:crypto"), env, server.port)
        assert _verify_works(server.url, verifier) == 200
    finally:
        server.stop()
    check = run_cli(["config", "check", str(FULL)], env)
    assert check.stdout.strip().endswith("nothing to change"), check.stdout


def test_relationships_for_an_endpoint_the_database_lacks_is_an_error_and_adds_nothing(env, tmp_path):
    document = yaml.safe_load(FULL.read_text())
    document["kms"]["configuration"]["endpoints"]["newcomer"] = [
        {"policy": "encrypt", "key": "vault-enc", "type": "encrypt"}
    ]
    grown = tmp_path / "grown.yaml"
    grown.write_text(yaml.safe_dump(document))
    ServeProcess(FULL, env).stop()
    result = run_cli(
        ["relationships", "--config", str(grown), "--app", str(_app(tmp_path, n="kms:newcomer"))], env, check=False
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "Error: endpoint 'newcomer' is not in the database: start 'kms-service serve' with this services YAML "
        "first (relationships never adds or removes endpoints)"
    )
    assert "create endpoint newcomer" in run_cli(["config", "check", str(grown)], env).stdout


def test_serve_refuses_a_file_that_drops_endpoints_unless_prune(env, partial, tmp_path):
    server = ServeProcess(FULL, env)
    try:
        verifier = _token(FULL, _app(tmp_path, v="kms:verifier"), env, server.port)
    finally:
        server.stop()

    refused = serve_exit(partial, env)
    assert refused.returncode == 1
    lines = refused.stderr.strip().splitlines()
    assert lines[-1].startswith("Error: the services YAML drops endpoint(s) admin_enc, admin_sign, decrypter, "), lines
    assert "manage_keys, rewrapper, verifier, which the database holds with 1 token(s)" in lines[-1]
    assert "pass --prune" in lines[-1]
    assert "Traceback" not in refused.stderr

    # config check shows the same plan, exits 1, and changes nothing.
    check = run_cli(["config", "check", str(partial)], env, check=False)
    assert check.returncode == 1
    assert "  remove endpoint verifier and its 1 token(s) (only with --prune)" in check.stdout
    assert "  remove endpoint crypto" not in check.stdout
    assert run_cli(["config", "check", str(FULL)], env).stdout.strip().endswith("nothing to change")

    server = ServeProcess(FULL, env)
    try:
        assert _verify_works(server.url, verifier) == 200  # nothing was removed
    finally:
        server.stop()

    server = ServeProcess(partial, env, "--prune")
    try:
        assert _verify_works(server.url, verifier) == 403  # removed with its endpoint
    finally:
        output = server.stop()
    assert "--prune: removing endpoint(s) admin_enc, admin_sign, decrypter, encrypter, manage_keys" in output
    assert run_cli(["config", "check", str(partial)], env).stdout.strip().endswith("nothing to change")
