"""The schema: Alembic owns it (models and migrations agree, downgrade/upgrade round trip), and the
database never holds a secret in the clear."""

from __future__ import annotations

import base64
from datetime import timedelta
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy import inspect, select

from kms_service.material import KeyMaterial
from kms_service.seal import key_material_aad, server_secret_aad
from kms_service.storage import migrate
from kms_service.storage import models as m
from kms_service.storage.database import create_engine, normalize_database_url

TABLES = {
    "keys",
    "key_versions",
    "endpoints",
    "policies",
    "endpoint_policies",
    "tokens",
    "namespaces",
    "token_policies",
    "token_roles",
    "seal_check",
    "master_key_rollover",
    "server_secrets",
    "engine_settings",
    "mounts",
    "key_version_usage",
    "change_log",
    "audit_anchors",
    "audit_records",
    "wrapped_responses",
}


async def _tables(engine) -> set[str]:
    async with engine.connect() as conn:
        return set(await conn.run_sync(lambda c: inspect(c).get_table_names())) - {"alembic_version"}


@pytest.mark.empty_database
async def test_migrations_match_the_models_and_round_trip(database_url):
    engine = create_engine(database_url)
    try:
        await migrate.upgrade(engine)
        assert await _tables(engine) == TABLES
        await migrate.check(engine)  # raises if autogenerate would emit anything
        await migrate.downgrade(engine, "base")
        assert await _tables(engine) == set()
        await migrate.upgrade(engine)
        assert await _tables(engine) == TABLES
        await migrate.check(engine)
        await migrate.upgrade(engine)  # idempotent
    finally:
        await engine.dispose()


def _secrets(server, tokens: list[str]) -> dict[str, bytes]:
    """Everything that must never appear in the database in the clear."""

    async def material():
        found = {}
        async with server.kms.db.reading() as session:
            rows = await session.execute(
                select(
                    m.Key.name, m.KeyVersion.version, m.KeyVersion.sealed_material, m.KeyVersion.material_format
                ).join(m.KeyVersion, m.KeyVersion.key_id == m.Key.id)
            )
            for name, version, sealed, fmt in rows:
                envelope = server.kms.master_key.unseal(sealed, key_material_aad(name, version, fmt))
                material = KeyMaterial.from_bytes(envelope)
                found[f"{name} v{version} key"] = material.key
                found[f"{name} v{version} hmac key"] = material.hmac_key
                found[f"{name} v{version} envelope"] = envelope
            for secret in await session.execute(select(m.ServerSecret.name, m.ServerSecret.sealed_value)):
                found[f"server secret {secret.name}"] = server.kms.master_key.unseal(
                    secret.sealed_value, server_secret_aad(secret.name)
                )
        return found

    secrets = {f"token {i}": token.encode() for i, token in enumerate(tokens)}
    secrets.update(server.call(material()))
    secrets["master key"] = base64.b64decode(server.kms.master_key.loaded.export())
    # Each secret also in the text forms a dump would show it in.
    for name, value in list(secrets.items()):
        secrets[f"{name} (hex)"] = value.hex().encode()
        secrets[f"{name} (base64)"] = base64.b64encode(value)
    return secrets


async def _one_sealed_blob(server) -> bytes:
    async with server.kms.db.reading() as session:
        return (await session.execute(select(m.KeyVersion.sealed_material).limit(1))).scalar_one()


async def _postgres_dump(url: str) -> bytes:
    conn = await asyncpg.connect(normalize_database_url(url).replace("postgresql+asyncpg", "postgresql"))
    try:
        dump = []
        for table in sorted(TABLES | {"alembic_version"}):
            for row in await conn.fetch(f'SELECT row_to_json(t)::text AS j FROM "{table}" t'):  # noqa: S608
                dump.append(row["j"])
        return "\n".join(dump).encode()
    finally:
        await conn.close()


def test_database_holds_no_token_and_no_key_material_in_the_clear(server, database_url):
    tokens = [server.endpoint_token(e) for e in ("manage_keys", "crypto", "signer")]
    tokens.append(server.call(server.kms.tokens.create(["root"], timedelta(hours=1)))[0])
    vault = server.client(tokens[1]).secrets.transit
    vault.rotate_key("vault-enc")
    vault.encrypt_data("vault-enc", plaintext=base64.b64encode(b"hello").decode())
    secrets = _secrets(server, tokens)

    if database_url.startswith("sqlite"):
        db_file = Path(database_url.removeprefix("sqlite:///"))
        dump = b"".join(p.read_bytes() for p in db_file.parent.glob(db_file.name + "*"))
    else:
        dump = server.call(_postgres_dump(database_url))
    assert len(dump) > 1000
    # The search sees sealed bytes as the dump shows them (raw in SQLite, hex in PostgreSQL's JSON):
    # the sealed form is there, the clear form is not.
    sealed = server.call(_one_sealed_blob(server))
    assert sealed in dump or sealed.hex().encode() in dump
    leaked = [name for name, value in secrets.items() if value in dump]
    assert leaked == []
    # The public half of a signing key is not secret, and is there for operators to read.
    assert b"BEGIN PUBLIC KEY" in dump


@pytest.mark.empty_database
async def test_schema_explains_itself(database_url):
    """Operators read the schema directly: tables carry comments (PostgreSQL) and named constraints."""
    engine = create_engine(database_url)
    try:
        await migrate.upgrade(engine)
        async with engine.connect() as conn:

            def describe(c):
                inspector = inspect(c)
                return (
                    {
                        t: (inspector.get_table_comment(t).get("text"), inspector.get_check_constraints(t))
                        for t in TABLES
                    }
                    if c.dialect.name == "postgresql"
                    else None
                )

            described = await conn.run_sync(describe)
        if described is not None:
            for table, (comment, _checks) in described.items():
                assert comment, f"table {table} has no comment"
            assert {c["name"] for c in described["keys"][1]} >= {
                "ck_keys_latest_version_positive",
                "ck_keys_min_decryption_version_in_range",
            }
    finally:
        await engine.dispose()
