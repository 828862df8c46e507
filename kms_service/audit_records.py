"""The audit log's rules: what a record holds, how secrets are hashed, how records are chained and checked.
Pure: no I/O (the sinks and the background flush are ``service/audit_log.py``).

**Records** follow Vault's audit devices: one JSON object per line, ``type`` ``request`` (written before
the handler runs) or ``response`` (before the answer leaves), with ``time``, ``auth`` (the token's hashed
accessor, policies, TTL), ``request`` (id, operation, path, mount, remote address, ``data``) and
``response`` (``data``) and ``error``. Every string inside ``data`` (request and response), every token and
accessor, is replaced by ``hmac-sha256:<hex>``, an HMAC-SHA256 under the audit key (Vault's convention):
by allowlist, so a field added later is hashed unless it is put on the list. Numbers and booleans stay.

**Chains.** Each writer (one serving process) keeps one chain per sink, named by a random ``chain`` id.
A record holds ``chain: {id, seq, prev}`` (its sequence number, from 1, and the previous record's ``hash``)
and, last on its line, its own ``hash``: HMAC-SHA256 under the chain key of the line's bytes before
``,"hash"``. So a record edited, removed or moved breaks the chain where it was, and only a holder of the
audit key could forge one. The head of each chain (its last seq and hash) is anchored in the database
periodically, which shows records cut off the end; a chain that ends cleanly says so in a last record of
type ``chain-end``.
"""

from __future__ import annotations

import hmac
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

HASH_PREFIX = "hmac-sha256:"
CHAIN_END = "chain-end"


def _subkey(audit_key: bytes, purpose: str) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose.encode()).derive(audit_key)


class AuditKeys:
    """The two keys derived from the server's audit secret: one hashes values, one chains records."""

    def __init__(self, audit_key: bytes) -> None:
        self._hash_key = _subkey(audit_key, "kms-service audit hash")
        self.chain_key = _subkey(audit_key, "kms-service audit chain")

    def hash(self, value: str | bytes) -> str:
        raw = value.encode() if isinstance(value, str) else value
        return HASH_PREFIX + hmac.digest(self._hash_key, raw, "sha256").hex()

    def redact(self, value: Any) -> Any:
        """``value`` with every string (and bytes) hashed, at any depth; numbers, booleans and null kept."""
        if isinstance(value, str | bytes):
            return self.hash(value)
        if isinstance(value, Mapping):
            return {str(k): self.redact(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.redact(v) for v in value]
        if value is None or isinstance(value, bool | int | float):
            return value
        return self.hash(str(value))  # anything else (a datetime, an enum) is hashed as its text


@dataclass(frozen=True)
class Caller:
    """The authenticated caller, as much as a record shows of it (hashed where it is a credential)."""

    token: str
    accessor: str
    display_name: str
    policies: tuple[str, ...]
    token_ttl: int
    issue_time: str


@dataclass(frozen=True)
class Exchange:
    """One request (and, once answered, its response), before hashing."""

    request_id: str
    time: str
    operation: str  # Vault's: create, read, update, delete, list
    path: str  # as sent, without /v1/
    remote_address: str | None
    caller: Caller | None = None
    mount_point: str | None = None
    mount_type: str | None = None
    data: Mapping[str, Any] | None = None
    # The request's namespace (Vault's id and path); None: the root namespace.
    namespace: tuple[str, str] | None = None


def entry(
    keys: AuditKeys,
    kind: str,
    exchange: Exchange,
    *,
    response: Mapping[str, Any] | None = None,
    status: int | None = None,
    error: str = "",
) -> dict[str, Any]:
    """Vault's audit entry of ``kind`` request or response, secrets hashed."""
    caller = exchange.caller
    auth: dict[str, Any] = {}
    if caller is not None:
        auth = {
            "client_token": keys.hash(caller.token),
            "accessor": keys.hash(caller.accessor),
            "display_name": caller.display_name,
            "policies": list(caller.policies),
            "token_policies": list(caller.policies),
            "token_type": "service",
            "token_ttl": caller.token_ttl,
            "token_issue_time": caller.issue_time,
        }
    request: dict[str, Any] = {
        "id": exchange.request_id,
        "operation": exchange.operation,
        "path": exchange.path,
        "namespace": (
            {"id": "root"}
            if exchange.namespace is None
            else {"id": exchange.namespace[0], "path": exchange.namespace[1]}
        ),
        "remote_address": exchange.remote_address,
        "data": keys.redact(exchange.data) if exchange.data is not None else None,
    }
    if exchange.mount_point is not None:
        request["mount_point"] = exchange.mount_point
        request["mount_type"] = exchange.mount_type
    if caller is not None:
        request["client_token"] = auth["client_token"]
        request["client_token_accessor"] = auth["accessor"]
    record: dict[str, Any] = {"time": exchange.time, "type": kind, "auth": auth, "request": request, "error": error}
    if kind == "response":
        record["response"] = {
            "mount_point": exchange.mount_point,
            "mount_type": exchange.mount_type,
            "status": status,
            "data": keys.redact(response) if response is not None else None,
        }
    return record


def serialize(record: Mapping[str, Any]) -> bytes:
    """A record as one line of JSON (without its chain fields; ``Chain.link`` adds them)."""
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False, default=str).encode()


@dataclass
class Chain:
    """One writer's chain in one sink: the next record's sequence number and the last record's hash."""

    id: str
    key: bytes
    seq: int = 0
    head: str = ""

    def link(self, record: bytes) -> tuple[bytes, int, str]:
        """The line (with its newline) ``record`` (``serialize``'s JSON object) is written as next, its seq
        and hash. The chain moves on only by ``advance`` once the line was written, so a record that failed
        to write leaves no gap."""
        seq = self.seq + 1
        chain = json.dumps({"id": self.id, "seq": seq, "prev": self.head}, separators=(",", ":")).encode()
        body = record[:-1] + b',"chain":' + chain
        digest = hmac.digest(self.key, body, "sha256").hex()
        return body + b',"hash":"' + digest.encode() + b'"}\n', seq, digest

    def advance(self, seq: int, digest: str) -> None:
        self.seq, self.head = seq, digest


_LINE = re.compile(rb'(?P<body>\{.*),"hash":"(?P<hash>[0-9a-f]{64})"\}\r?\n?', re.DOTALL)


@dataclass(frozen=True)
class Anchor:
    """A chain's head as the database last recorded it. Every chain starts at seq 1; ``started_at`` and
    ``updated_at``: when it was first and last anchored (None: not known)."""

    seq: int
    hash: str
    closed: bool = False
    started_at: datetime | None = None
    updated_at: datetime | None = None

    def expected(self, since: datetime | None) -> bool:
        """Whether the records given (those written from ``since`` on, else all) hold this chain's records."""
        return since is None or self.updated_at is None or self.updated_at >= since

    def starts_in(self, since: datetime | None) -> bool:
        """Whether the records given hold this chain's first record (seq 1)."""
        return since is None or self.started_at is None or self.started_at >= since


@dataclass
class ChainReport:
    """What one chain in a file proves."""

    id: str
    records: int = 0
    first_seq: int | None = None
    # The last record up to which every record is present, in order and unedited (0: none).
    verified_seq: int = 0
    verified_line: int = 0
    problem: str | None = None
    ended: bool = False  # a chain-end record closes it
    anchor: Anchor | None = None
    # How the end of the chain compares with its anchor.
    tail: str = ""
    # Records missing at the break, and the seqs met after it (a missing record found later was moved).
    gap: tuple[int, int] | None = None
    seen_after: set[int] = field(default_factory=set, repr=False)

    @property
    def ok(self) -> bool:
        return self.problem is None


@dataclass
class Verification:
    chains: dict[str, ChainReport] = field(default_factory=dict)
    unreadable: list[int] = field(default_factory=list)  # line numbers that are no record
    # The last line, when it is part of a record: a write cut short by a crash (not counted as a fault).
    torn_end: int | None = None
    # Chains anchored in the database with no record in these lines (though they should have some).
    absent: list[str] = field(default_factory=list)
    # Chains anchored in the database whose records all precede ``since``: not looked for.
    before_since: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.unreadable and not self.absent and all(c.ok for c in self.chains.values())


def verify(
    lines: Iterable[bytes],
    chain_key: bytes,
    anchors: Mapping[str, Anchor] | None = None,
    known_heads: Mapping[str, tuple[int, str]] | None = None,
    since: datetime | None = None,
) -> Verification:
    """Check the records of ``lines`` (one or more files of one log, in order) chain by chain. ``anchors``:
    the database's head of each chain; each anchored chain must be in ``lines`` from its first record
    (seq 1), so records erased from the start show. ``known_heads``: where a chain stood before these lines
    (the end of an earlier file), if known. ``since``: ``lines`` are the records written from then on (the
    earlier ones are not here): a chain anchored last before it is not looked for, and one first anchored
    before it may start at any seq (its first record's ``prev`` is taken on trust)."""
    anchors = anchors or {}
    known_heads = known_heads or {}
    result = Verification()
    number, raw = 0, b""
    heads: dict[str, tuple[int, str]] = dict(known_heads)
    anchored_hashes: dict[str, str] = {}  # the hash of the record at each chain's anchored seq
    for number, raw in enumerate(lines, start=1):
        match = _LINE.fullmatch(raw)
        record = None
        if match is not None:
            try:
                record = json.loads(match["body"] + b"}")
            except ValueError:
                record = None
        chain = record.get("chain") if isinstance(record, dict) else None
        if not isinstance(chain, dict) or not isinstance(chain.get("id"), str) or type(chain.get("seq")) is not int:
            result.unreadable.append(number)
            continue
        report = result.chains.setdefault(chain["id"], ChainReport(chain["id"]))
        report.records += 1
        if report.first_seq is None:
            report.first_seq = chain["seq"]
        if report.problem is not None:
            report.seen_after.add(chain["seq"])
            continue
        expected = hmac.digest(chain_key, match["body"], "sha256").hex()
        if not hmac.compare_digest(expected, match["hash"].decode()):
            report.problem = f"line {number} (seq {chain['seq']}): edited (its hash does not match its content)"
            continue
        previous = heads.get(chain["id"])
        if previous is not None:
            seq, head = previous
            if chain["seq"] != seq + 1:
                what = "missing" if chain["seq"] > seq + 1 else "out of order"
                if what == "missing":
                    report.gap = (seq + 1, chain["seq"] - 1)
                report.problem = f"line {number}: seq {chain['seq']} follows seq {seq}: record(s) {what}" + (
                    f" (seq {seq + 1}..{chain['seq'] - 1})" if what == "missing" else ""
                )
                continue
            if chain.get("prev") != head:
                report.problem = f"line {number} (seq {chain['seq']}): the record before it was removed or replaced"
                continue
        elif chain["seq"] == 1 and chain.get("prev") != "":
            report.problem = f"line {number} (seq 1): a chain's first record names no predecessor"
            continue
        heads[chain["id"]] = (chain["seq"], match["hash"].decode())
        anchor = anchors.get(chain["id"])
        if anchor is not None and anchor.seq == chain["seq"]:
            anchored_hashes[chain["id"]] = match["hash"].decode()
        report.verified_seq, report.verified_line = chain["seq"], number
        report.ended = record.get("type") == CHAIN_END
    if result.unreadable and result.unreadable[-1] == number and not raw.endswith(b"\n"):
        result.torn_end = result.unreadable.pop()
    for chain_id, report in result.chains.items():
        if report.gap is not None and set(range(report.gap[0], report.gap[1] + 1)) <= report.seen_after:
            report.problem = f"{report.problem}, found further on: records out of order"
        anchor = anchors.get(chain_id)
        report.anchor = anchor
        if anchor is None:
            report.tail = "no anchor in the database for this chain"
            continue
        head = heads.get(chain_id)
        if chain_id not in known_heads and anchor.starts_in(since) and report.first_seq != 1:
            erased = (
                f"the database anchored the chain from seq 1 but the first record in the files given is seq "
                f"{report.first_seq}: records seq 1..{report.first_seq - 1} are missing (name the earlier files, or "
                "--since)"
            )
            report.problem = erased if report.ok else f"{erased}; then {report.problem}"
            report.verified_seq = report.verified_line = 0
        elif report.ok and head is not None and head[0] < anchor.seq:
            report.problem = (
                f"records seq {head[0] + 1}..{anchor.seq} are missing from the end (the database anchored seq "
                f"{anchor.seq}): cut off, or in a later file not given"
            )
        elif report.ok and not hmac.compare_digest(anchored_hashes.get(chain_id, anchor.hash), anchor.hash):
            report.problem = f"the record at anchored seq {anchor.seq} differs from the one the database anchored"
        if report.ok:
            if report.ended:
                report.tail = "complete (the chain was closed)"
            elif report.verified_seq == anchor.seq:
                report.tail = "complete up to the last anchor; the writer did not close the chain (a crash?)"
            else:
                report.tail = (
                    f"{report.verified_seq - anchor.seq} record(s) after the last anchor (seq {anchor.seq}): "
                    "intact, but whether more followed is not known (the writer did not close the chain)"
                )
    for chain_id, anchor in sorted(anchors.items()):
        if chain_id not in result.chains and chain_id not in known_heads:
            (result.absent if anchor.expected(since) else result.before_since).append(chain_id)
    return result
