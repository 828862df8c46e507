"""``kms-service serve --workers N``: N processes serving one port, one master key, one database.

The parent (this module's ``supervise``) has already migrated the database and provisioned the services YAML
(``serving.py``), so workers only check the schema and load what is there: they never race a migration. It
then starts the workers (``multiprocessing``'s spawn: each a fresh interpreter with its own event loop), and
each binds its own listening socket on the same port with ``SO_REUSEPORT``: the kernel spreads new
connections over them. Caches stay coherent between workers as between nodes (``service/cluster.py``), and
the background jobs run in one process per database (``KMS.leads``).

SIGTERM or SIGINT to the parent is forwarded to every worker, which drains (aiohttp's graceful shutdown) and
exits; the parent exits 0 once all have. A worker that fails to start stops the others and the parent exits 1
with that worker's reason on one line; a worker that dies later does the same (a supervisor such as systemd
restarts the whole service). A worker whose parent dies (even SIGKILLed) gets SIGTERM from the kernel
(``PR_SET_PDEATHSIG``), so no worker is left serving on its own.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import os
import signal
import socket
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

log = logging.getLogger("kms_service")

PR_SET_PDEATHSIG = 1
# How long stopping workers may take to drain before they are killed (aiohttp's own shutdown timeout is 60 s).
STOP_TIMEOUT = 75.0


class WorkerFailed(Exception):
    """A worker could not start, or died: the message is one line for the operator."""


@dataclass(frozen=True)
class Worker:
    index: int
    process: Any  # multiprocessing.process.BaseProcess
    reader: Connection


def check_port(host: str, port: int) -> int:
    """The port the workers will share, checked free (a socket without SO_REUSEPORT: it fails when anything
    listens there, a second ``serve --workers`` included, which SO_REUSEPORT would otherwise let in silently).
    Port 0 becomes a free port here."""
    if not hasattr(socket, "SO_REUSEPORT"):
        raise WorkerFailed("--workers above 1 needs SO_REUSEPORT (Linux); use --workers 1 here")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as exc:
        raise WorkerFailed(f"cannot resolve --host {host}: {exc.strerror or exc}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            raise WorkerFailed(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        return sock.getsockname()[1]


def die_with_parent(parent: int) -> None:
    """Ask the kernel for SIGTERM when the parent dies (Linux); if it is already gone, stop now."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:
        raise SystemExit(0)


def start(count: int, target: Callable[..., None], args: tuple[Any, ...]) -> list[Worker]:
    """Start ``count`` workers running ``target(*args, index, ready_writer, parent_pid)``."""
    context = multiprocessing.get_context("spawn")
    workers = []
    for index in range(count):
        reader, writer = context.Pipe(duplex=False)
        process = context.Process(
            target=target, args=(*args, index, writer, os.getpid()), name=f"kms-service worker {index}"
        )
        process.start()
        writer.close()
        workers.append(Worker(index, process, reader))
    return workers


def _reason(worker: Worker) -> str:
    """What the worker said before it ended, or how it ended."""
    with contextlib.suppress(EOFError, OSError):
        while worker.reader.poll():
            message = worker.reader.recv()
            if message[0] == "error":
                return message[1]
    code = worker.process.exitcode
    how = f"signal {-code}" if code is not None and code < 0 else f"exit status {code}"
    return f"worker {worker.index} (pid {worker.process.pid}) ended ({how})"


def wait_ready(workers: list[Worker], stopping: Callable[[], bool]) -> None:
    """Until every worker has said it listens; a worker that ends first raises ``WorkerFailed``."""
    pending = {w.reader: w for w in workers}
    sentinels = {w.process.sentinel: w for w in workers}
    while pending and not stopping():
        for ready in wait([*pending, *sentinels], timeout=0.5):
            worker = pending.get(ready) or sentinels[ready]
            if worker.reader not in pending:
                continue  # ready already; supervise() watches it from now on
            message = None
            if ready is worker.reader:
                with contextlib.suppress(EOFError, OSError):
                    message = worker.reader.recv()
            if message is not None and message[0] == "ready":
                pending.pop(worker.reader)
                continue
            # It ended, or said why it could not start.
            worker.process.join(5)
            if stopping():  # a signal during start-up: stop() reports how the workers ended
                pending.pop(worker.reader)
                continue
            raise WorkerFailed(message[1] if message is not None else _reason(worker))


def stop(workers: list[Worker], sig: int = signal.SIGTERM) -> list[Worker]:
    """Signal every live worker and wait for them to drain; returns those that did not end cleanly."""
    for worker in workers:
        if worker.process.is_alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker.process.pid, sig)
    for worker in workers:
        worker.process.join(STOP_TIMEOUT)
        if worker.process.is_alive():
            pid = worker.process.pid
            log.error("worker %d (pid %d) did not stop in %.0f s; killing it", worker.index, pid, STOP_TIMEOUT)
            worker.process.kill()
            worker.process.join(5)
    return [w for w in workers if w.process.exitcode not in (0, -signal.SIGTERM, -signal.SIGINT)]


def supervise(workers: list[Worker], stopping: Callable[[], bool]) -> None:
    """Serve until a signal (then drain every worker) or until a worker dies (then stop the rest, raise)."""
    sentinels = {w.process.sentinel: w for w in workers}
    while not stopping():
        ended = wait(list(sentinels), timeout=0.5)
        if ended and not stopping():
            worker = sentinels[ended[0]]
            worker.process.join(5)
            reason = _reason(worker)
            stop(workers)
            raise WorkerFailed(reason)
    failed = stop(workers)
    if failed:
        raise WorkerFailed("; ".join(_reason(w) for w in failed))


class Signals:
    """SIGTERM/SIGINT in the parent: remember it and pass SIGTERM on to every worker started so far;
    SIGHUP is passed on as it is."""

    def __init__(self) -> None:
        self.received = False
        self.workers: list[Worker] = []
        self._previous = {}
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)
        self._previous[signal.SIGHUP] = signal.signal(signal.SIGHUP, self._reopen)

    def _handle(self, _sig: int, _frame: Any) -> None:
        self.received = True
        for worker in self.workers:
            with contextlib.suppress(ProcessLookupError, ValueError, AttributeError):
                if worker.process.is_alive():
                    os.kill(worker.process.pid, signal.SIGTERM)

    def _reopen(self, _sig: int, _frame: Any) -> None:
        """SIGHUP (logrotate): every worker reopens the audit file."""
        for worker in self.workers:
            with contextlib.suppress(ProcessLookupError, ValueError, AttributeError):
                if worker.process.is_alive():
                    os.kill(worker.process.pid, signal.SIGHUP)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def report_ready(writer: Connection) -> None:
    writer.send(("ready",))
    writer.close()


def report_error(writer: Connection, message: str) -> None:
    with contextlib.suppress(OSError):
        writer.send(("error", message))
        writer.close()
