"""The wire formats of values the keys produce and take: ``<prefix>:v<N>:<base64>`` ciphertexts, signatures,
HMACs and CMACs (version parsing included), and base64 exactly as Go decodes it. Pure; no I/O."""

from __future__ import annotations

import base64
import binascii
import re
from typing import NamedTuple

from kms_service.errors import InvalidRequest
from kms_service.keytypes.base import parse_go_int

OUTPUT_PREFIX = "vault-kms"
# Prefixes accepted on input: ours, and Vault's so that ciphertexts from Vault docs and clients parse.
INPUT_PREFIXES = ("vault-kms", "vault")

_VERSION_RE = re.compile(r"[1-9][0-9]{0,9}", re.ASCII)
MAX_VERSION = 2**31 - 1
# A well-formed ``<prefix>:v<N>:<payload>`` in one match (well_formed, parse_versioned's fast path), built
# from the same parts as its checks, which say what is wrong with anything else (tests/test_hot_path.py
# compares the two).
_VERSIONED_RE = re.compile(
    "(" + "|".join(map(re.escape, INPUT_PREFIXES)) + "):v(" + _VERSION_RE.pattern + "):(.*)", re.ASCII | re.DOTALL
)


def b64decode_strict(value: str) -> bytes:
    """Standard base64 with padding; like Go's StdEncoding, CR and LF are skipped, nothing else is.

    Raises ValueError with Go's text, ``illegal base64 data at input byte N`` (N as Go computes it)."""
    if len(value) % 4 == 0 and not value.endswith("==="):
        # binascii's strict mode, on whole quanta and without a padding-only quantum after them (which it
        # takes and Go refuses), accepts exactly what Go does without CR or LF (it refuses those;
        # tests/test_hot_path.py compares it with the byte-by-byte reference): one pass in C, on the string
        # itself (it refuses one with a character past ASCII, which the path below then reports).
        try:
            return binascii.a2b_base64(value, strict_mode=True)
        except ValueError:  # binascii.Error included
            pass
    try:
        raw = value.encode("ascii")
    except UnicodeEncodeError as exc:
        raise ValueError(f"illegal base64 data at input byte {exc.start}") from None
    offset = go_base64_error_offset(raw)
    if offset is not None:
        raise ValueError(f"illegal base64 data at input byte {offset}")
    try:
        return base64.b64decode(raw.replace(b"\r", b"").replace(b"\n", b""), validate=True)
    except (binascii.Error, ValueError):  # not reached: Go's rules are the stricter ones
        raise ValueError("illegal base64 data") from None


_B64_ALPHABET = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
_NEWLINES = (0x0A, 0x0D)


def go_base64_error_offset(src: bytes) -> int | None:
    """Where Go's ``base64.StdEncoding.DecodeString`` reports a ``CorruptInputError`` for ``src``, or None
    when it decodes. Go reads 4-character quanta, skips CR and LF anywhere, and accepts padding only at the
    end of the last quantum."""
    si, n = 0, len(src)
    while True:
        j = 0
        while j < 4:
            if si == n:
                return None if j == 0 else si - j
            ch = src[si]
            si += 1
            if ch in _B64_ALPHABET:
                j += 1
                continue
            if ch in _NEWLINES:
                continue
            if ch != 0x3D or j < 2:  # not '=', or padding too early
                return si - 1
            if j == 2:  # "==" expected: the second '=' after any newlines
                while si < n and src[si] in _NEWLINES:
                    si += 1
                if si == n:
                    return n
                if src[si] != 0x3D:
                    return si - 1
                si += 1
            while si < n and src[si] in _NEWLINES:
                si += 1
            return si if si < n else None


def b64encode(data: bytes) -> str:
    return binascii.b2a_base64(data, newline=False).decode("ascii")  # base64.b64encode, one call less


class Versioned(NamedTuple):
    """A parsed ``<prefix>:v<N>:<payload>`` value (ciphertext or signature). A tuple, cheap to build (a frozen
    dataclass took a fifth of a batch decrypt's time); batch decrypt keeps plain pairs (``versioned_pair``)."""

    version: int
    payload: str


def well_formed(value: str) -> tuple[int, str] | None:
    """The version and payload of a well-formed ``<prefix>:v<N>:<payload>`` in one match, else None (then
    parse_versioned's checks say what is wrong with it). A plain pair: this runs for every batch item."""
    match = _VERSIONED_RE.fullmatch(value)
    if match is not None and (version := int(match[2])) <= MAX_VERSION:
        return version, match[3]
    return None


def parse_versioned(value: str, what: str) -> Versioned:
    """Parse ``vault-kms:v3:...`` or ``vault:v3:...``; ``what`` names the field in error messages."""
    parsed = well_formed(value)
    if parsed is not None:
        return Versioned(*parsed)
    prefix, sep, rest = value.partition(":")
    if not sep or prefix not in INPUT_PREFIXES or not rest.startswith("v"):
        raise InvalidRequest(f"invalid {what}: no prefix")
    version_text, sep, payload = rest[1:].partition(":")
    if not sep:
        raise InvalidRequest(f"invalid {what}: wrong number of fields")
    if not _VERSION_RE.fullmatch(version_text) or int(version_text) > MAX_VERSION:
        raise InvalidRequest(f"invalid {what}: version number could not be decoded")
    return Versioned(int(version_text), payload)


def versioned_pair(value: str, what: str) -> tuple[int, str]:
    """``parse_versioned``'s version and payload, as a plain pair when well formed (building a ``Versioned``
    for each item was a tenth of a batch decrypt's own time)."""
    return well_formed(value) or parse_versioned(value, what)


def version_of(value: str, what: str) -> int:
    """``parse_versioned(value, what).version``, without building the pair (every batch item's version is
    read before the operation, which parses the value again)."""
    parsed = well_formed(value)
    return parsed[0] if parsed is not None else parse_versioned(value, what).version


def format_versioned(version: int, payload: bytes, urlsafe: bool = False) -> str:
    if urlsafe:
        text = base64.urlsafe_b64encode(payload).rstrip(b"=").decode("ascii")
    else:
        text = b64encode(payload)
    return versioned_prefix(version) + text


def versioned_prefix(version: int) -> str:
    """What every ciphertext, signature and HMAC of ``version`` starts with."""
    return f"{OUTPUT_PREFIX}:v{version}:"


def decode_signature(payload: str, marshaling: str) -> bytes:
    """A signature's bytes from its payload: URL-safe base64 without padding for ``jws``, else standard base64
    (``b64decode_strict``). Raises ValueError (or UnicodeEncodeError) when it is not that."""
    if marshaling == "jws":
        raw = base64.urlsafe_b64decode(_pad(payload).encode("ascii"))
        if not re.fullmatch(r"[A-Za-z0-9_-]*", payload, re.ASCII):
            raise ValueError("not URL-safe base64")
        return raw
    return b64decode_strict(payload)


def _pad(text: str) -> str:
    return text + "=" * (-len(text) % 4)


def parse_hmac(value: str) -> tuple[int, bytes]:
    """The version and the MAC of an HMAC value to verify (``vault-kms:v<N>:`` or ``vault:v<N>:`` + base64),
    with Vault's errors in Vault's order. The version is any Go integer here: the key's rules judge it."""
    rest = next(
        (value[len(prefix) + 2 :] for prefix in INPUT_PREFIXES if value.startswith(f"{prefix}:v")),
        None,
    )
    if rest is None:
        raise InvalidRequest("invalid HMAC to verify: no prefix")
    version_text, sep, payload = rest.partition(":")
    if not sep:
        raise InvalidRequest("invalid HMAC: wrong number of fields")
    version = parse_go_int(version_text)
    if version is None:
        raise InvalidRequest("invalid HMAC: version number could not be decoded")
    try:
        return version, b64decode_strict(payload)
    except ValueError as exc:
        raise InvalidRequest(f"unable to decode verification HMAC as base64: {exc}") from None
