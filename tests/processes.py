"""Run the real ``kms-service`` command as operators do: separate processes, real ports, real signals."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

COMMAND = [sys.executable, "-m", "kms_service"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cli_env(database_url: str, data_dir: Path, **extra: str) -> dict[str, str]:
    # Without COLUMNS and LINES the commands lay tables out as for a pipe, whatever the test runner sets
    # (pytest-xdist's workers set COLUMNS=80, which wraps the tables the tests read).
    env = {k: v for k, v in os.environ.items() if not k.startswith("KMS_") and k not in ("COLUMNS", "LINES")}
    env.update(KMS_DATABASE_URL=database_url, KMS_DATA_DIR=str(data_dir), **extra)
    return env


def run_cli(
    args: list[str],
    env: dict[str, str],
    check: bool = True,
    *,
    command: list[str] = COMMAND,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """``command`` and ``cwd`` run another installation (test_packaging.py: a wheel in its own venv)."""
    result = subprocess.run(command + args, env=env, cwd=cwd, capture_output=True, text=True, timeout=120)
    if check and result.returncode != 0:
        raise AssertionError(f"kms-service {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
    return result


class ServeProcess:
    def __init__(
        self,
        config: Path,
        env: dict[str, str],
        *extra_args: str,
        command: list[str] = COMMAND,
        cwd: Path | None = None,
        scheme: str = "http",
        verify: str | bool = True,
    ) -> None:
        """``scheme``/``verify``: a server started with --tls-cert (verify: the CA file to trust)."""
        self.port = free_port()
        self.url = f"{scheme}://127.0.0.1:{self.port}"
        if "--workers" not in extra_args and "KMS_WORKERS" not in env:
            # One process, as these tests were written for (they look at its pid, its log, its listener);
            # tests/test_workers.py runs several with --workers.
            env = {**env, "KMS_WORKERS": "1"}
        self.proc = subprocess.Popen(
            command + ["serve", "--config", str(config), "--port", str(self.port), *extra_args],
            env=env,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"kms-service serve exited early:\n{self.proc.stdout.read()}")
            try:
                if requests.get(f"{self.url}/v1/sys/health", timeout=1, verify=verify).status_code == 200:
                    return
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "kms-service serve did not come up in 60 s"
            time.sleep(0.1)

    def stop(self, sig: int = signal.SIGTERM) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            output, _ = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            output, _ = self.proc.communicate()
        return output


def serve_exit(config: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run ``serve`` expecting it to refuse to start; returns the finished process."""
    return subprocess.run(
        COMMAND + ["serve", "--config", str(config), "--port", str(free_port())],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
