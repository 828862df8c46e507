"""Durations as Vault reads them (parseutil.ParseDurationSecond): a number of seconds (``3600``, ``"3600"``)
or a string of decimal numbers with units (``"1h"``, ``"1.5h"``, ``"90m"``, ``"1h30m"``, ``"30d"``). Pure."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

_UNITS = {"ms": Decimal("0.001"), "s": Decimal(1), "m": Decimal(60), "h": Decimal(3600), "d": Decimal(86400)}
_PART_RE = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)", re.ASCII)
# About 68 years: beyond any sensible TTL or period, and within a 32-bit INTEGER column on PostgreSQL.
MAX_SECONDS = 2**31 - 1


class DurationError(ValueError):
    """Not a duration; the message is safe to show (it never echoes long input)."""


def parse_seconds(value: object) -> int:
    """Whole seconds (truncated, as Vault's TypeDurationSecond) of an int or a duration string; >= 0."""
    if type(value) is int:
        seconds = Decimal(value)
    elif isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"[0-9]{1,15}", text, re.ASCII):
            seconds = Decimal(text)
        else:
            position, seconds = 0, Decimal(0)
            for match in _PART_RE.finditer(text):
                if match.start() != position:
                    break
                try:
                    seconds += Decimal(match[1]) * _UNITS[match[2]]
                except InvalidOperation:
                    raise DurationError("invalid duration") from None
                position = match.end()
            if not text or position != len(text):
                raise DurationError("invalid duration: use seconds or e.g. 90s, 15m, 1.5h, 30d")
    else:
        raise DurationError("invalid duration: expected seconds or a duration string")
    if seconds < 0 or seconds > MAX_SECONDS:
        raise DurationError(f"duration out of range (0 to {MAX_SECONDS} seconds)")
    return int(seconds)


def human_seconds(seconds: int) -> str:
    """Seconds as Vault words them in warnings: Go's duration text without trailing zero units ("2h30m",
    "768h", "1h59m58s", "45s")."""
    hours, rest = divmod(max(0, int(seconds)), 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        text = f"{hours}h{minutes}m{secs}s"
    elif minutes:
        text = f"{minutes}m{secs}s"
    else:
        return f"{secs}s"
    text = text.removesuffix("0s") if text.endswith("m0s") else text
    return text.removesuffix("0m") if text.endswith("h0m") else text
