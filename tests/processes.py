"""Run the ``kms-service`` command as operators do: ``serve`` in separate processes (real ports, real
signals); the other commands in this process through the same entry point (``run_cli``)."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
import traceback
from pathlib import Path

import requests
from click.testing import CliRunner

from kms_service.cli import main

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
    command: list[str] | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a ``kms-service`` command in this process (click's CliRunner on ``kms_service.cli:main``, the
    installed script's entry point), with ``env`` as its whole environment: the same output and exit code as
    the process, without a new interpreter's imports each time. ``command`` and ``cwd`` run another
    installation in a process of its own (test_packaging.py: a wheel in its own venv); so does ``command=
    COMMAND`` (tests of the real executable)."""
    if command is not None or cwd is not None:
        result = subprocess.run(
            (command or COMMAND) + args, env=env, cwd=cwd, capture_output=True, text=True, timeout=120
        )
    else:
        result = _run_in_process(args, env)
    if check and result.returncode != 0:
        raise AssertionError(f"kms-service {' '.join(args)} failed ({result.returncode}):\n{result.stderr}")
    return result


def _run_in_process(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    # The command sets up the root logger (handlers, levels) as the process would; put the test's back after.
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    levels = {
        name: logger.level
        for name, logger in logging.Logger.manager.loggerDict.items()
        if isinstance(logger, logging.Logger)
    }
    # Every variable of this process not in ``env`` is unset for the command's run.
    environment: dict[str, str | None] = {name: None for name in os.environ if name not in env}
    environment.update(env)
    try:
        result = CliRunner().invoke(main, args, env=environment, prog_name="kms-service")
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        for name, saved in levels.items():
            logging.getLogger(name).setLevel(saved)
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        # What the interpreter prints for an uncaught exception, so tests that look for none still can.
        stderr += "".join(traceback.format_exception(result.exception))
    return subprocess.CompletedProcess(["kms-service", *args], result.exit_code, result.stdout, stderr)


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
        try:
            self._wait_until_up(verify)
        except BaseException:
            self.stop(signal.SIGKILL)  # never left running behind a failed test
            raise

    def _wait_until_up(self, verify: str | bool) -> None:
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"kms-service serve exited early:\n{self.proc.stdout.read()}")
            try:
                if requests.get(f"{self.url}/v1/sys/health", timeout=1, verify=verify).status_code == 200:
                    return
            except (requests.ConnectionError, requests.Timeout):  # not listening yet, or slow on a busy machine
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
