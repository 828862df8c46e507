"""A PostgreSQL cluster of a test's own (initdb, pg_ctl) on a free port: tests that stop their database stop
this one, never the shared server."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from processes import free_port


class PrivatePostgres:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="kms-pg-"))
        shutil.chown(self.dir, "postgres")
        self.port = free_port()
        self._as_postgres(["initdb", "-D", str(self.dir / "data"), "-U", "postgres", "--auth=trust"])

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _as_postgres(self, args: list[str]) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run(prefix + args, check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1"
        self._as_postgres(
            ["pg_ctl", "-D", str(self.dir / "data"), "-o", options, "-w", "start", "-l", str(self.dir / "log")]
        )

    def stop(self) -> None:
        self._as_postgres(["pg_ctl", "-D", str(self.dir / "data"), "-m", "immediate", "-w", "stop"])

    def remove(self) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run(
            prefix + ["pg_ctl", "-D", str(self.dir / "data"), "-m", "immediate", "stop"],
            capture_output=True,
        )
        shutil.rmtree(self.dir, ignore_errors=True)
