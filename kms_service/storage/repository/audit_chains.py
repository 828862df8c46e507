"""The audit log's database sink: its records, and the anchors of each chain's head."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from kms_service.storage import models as m

# --- audit log (service/audit_log.py) ---


async def add_audit_records(session: AsyncSession, rows: Sequence[tuple[str, int, str]]) -> None:
    """Records of the database sink: (chain id, seq, line). A record already stored (a batch retried after a
    commit whose answer was lost) is left as it is."""
    if rows:
        insert = pg_insert if session.bind.dialect.name == "postgresql" else sqlite_insert
        statement = insert(m.AuditRecord).on_conflict_do_nothing(index_elements=["chain_id", "seq"])
        await session.execute(statement, [{"chain_id": c, "seq": s, "line": line} for c, s, line in rows])


async def anchor_audit_chain(
    session: AsyncSession, chain_id: str, sink: str, seq: int, digest: str, closed: bool, now: datetime
) -> None:
    """Record a chain's head (one row per chain, moved forward)."""
    insert = pg_insert if session.bind.dialect.name == "postgresql" else sqlite_insert
    statement = (
        insert(m.AuditAnchor)
        .values(chain_id=chain_id, sink=sink, seq=seq, hash=digest, closed=closed, started_at=now, updated_at=now)
        .on_conflict_do_update(
            index_elements=["chain_id"], set_={"seq": seq, "hash": digest, "closed": closed, "updated_at": now}
        )
    )
    await session.execute(statement)


async def audit_anchors(session: AsyncSession) -> list[m.AuditAnchor]:
    return list((await session.execute(select(m.AuditAnchor))).scalars())


async def audit_record_lines(session: AsyncSession, after_id: int, limit: int) -> list[tuple[int, str]]:
    """The database sink's records in the order they were stored, a page at a time."""
    rows = await session.execute(
        select(m.AuditRecord.id, m.AuditRecord.line)
        .where(m.AuditRecord.id > after_id)
        .order_by(m.AuditRecord.id)
        .limit(limit)
    )
    return [(row.id, row.line) for row in rows]
