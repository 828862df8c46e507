"""Known runtime faults, logged as one line each and at most once per interval per kind.

A fault that every request meets at once (the database down, clients dropping connections under load)
must not flood the log: the first occurrence is logged, then at most one line per ``interval`` seconds per
kind, saying how many were not logged in between.
"""

from __future__ import annotations

import logging
import time


class RateLimitedLog:
    def __init__(self, logger: logging.Logger, interval: float = 10.0) -> None:
        self._logger = logger
        self._interval = interval
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def log(self, level: int, kind: str, message: str, *args: object) -> bool:
        """Log ``message`` unless a line of this ``kind`` was logged less than ``interval`` ago; True if logged."""
        now = time.monotonic()
        last = self._last.get(kind)
        if last is not None and now - last < self._interval:
            self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            return False
        self._last[kind] = now
        suppressed = self._suppressed.pop(kind, 0)
        if suppressed:
            message += " (%d more since the last such line)"
            args = (*args, suppressed)
        self._logger.log(level, message, *args)
        return True


# The application's one log of known faults (web/app.py makes it; the audit flush logs through it too).
FAULTS_KEY = "faults"  # the app's RateLimitedLog
