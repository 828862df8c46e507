"""The operators' views (kms_keys, kms_key_versions, kms_tokens, kms_endpoints): made and dropped by their
migration, free of secrets, and docs/operations.md's five questions, run verbatim, answer right on SQLite and
PostgreSQL."""

from __future__ import annotations

import base64
import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import hvac
import pytest
from sqlalchemy import inspect, select, text, update
from test_storage import TABLES, _secrets

from kms_service.storage import migrate
from kms_service.storage import models as m
from kms_service.storage.database import create_engine, normalize_database_url

ROOT = Path(__file__).resolve().parents[1]
VIEWS = {
    "kms_keys",
    "kms_key_versions",
    "kms_tokens",
    "kms_endpoints",
    "kms_namespaces",
    "kms_token_roles",
    "kms_wrapped_responses",
}
GRANTED = (
    "kms_keys, kms_key_versions, kms_tokens, kms_endpoints, kms_namespaces, kms_token_roles,\n"
    "    kms_wrapped_responses, alembic_version"
)
SECRET_COLUMNS = {"sealed_material", "sealed_value", "token_hmac"}


def readme_questions() -> list[tuple[int, str, str]]:
    """docs/operations.md's numbered questions and the SQL under each."""
    page = (ROOT / "docs" / "operations.md").read_text()
    section = page.split("## A readable database", 1)[1].split("\n## ", 1)[0]
    found = re.findall(r"\*\*(\d)\. (.+?)\*\*\n\n```sql\n(.+?)\n```", section, re.DOTALL)
    return [(int(number), question, sql) for number, question, sql in found]


async def _views(engine) -> set[str]:
    async with engine.connect() as conn:
        return set(await conn.run_sync(lambda c: inspect(c).get_view_names()))


@pytest.mark.empty_database
async def test_the_migration_makes_the_views_and_its_downgrade_drops_them(database_url):
    engine = create_engine(database_url)
    try:
        await migrate.upgrade(engine, "0019")
        assert await _views(engine) == set()
        await migrate.upgrade(engine)
        assert await _views(engine) == VIEWS
        await migrate.check(engine)  # the views are no table the models should know of
        await migrate.downgrade(engine, "0019")
        assert await _views(engine) == set()
        await migrate.upgrade(engine)
        assert await _views(engine) == VIEWS
        async with engine.connect() as conn:
            columns = await conn.run_sync(
                lambda c: {v: {col["name"] for col in inspect(c).get_columns(v)} for v in VIEWS}
            )
        for view, names in columns.items():
            assert names and not names & SECRET_COLUMNS, view
    finally:
        await engine.dispose()


async def _rows(engine, sql: str) -> list[dict]:
    async with engine.connect() as conn:
        return [dict(row._mapping) for row in await conn.execute(text(sql))]


def _age_versions(server, key: str, days: int) -> None:
    """Make a key look as a database that has run for a while would: its versions made ``days`` ago."""

    async def age() -> None:
        async with server.kms.db.writing() as session:
            key_id = (await session.execute(select(m.Key.id).where(m.Key.name == key))).scalar_one()
            old = datetime.now(UTC) - timedelta(days=days)
            await session.execute(update(m.KeyVersion).where(m.KeyVersion.key_id == key_id).values(created_at=old))
            await session.execute(update(m.Key).where(m.Key.id == key_id).values(created_at=old))

    server.call(age())


def test_readme_questions_answer_on_both_databases(server):
    questions = readme_questions()
    assert [number for number, _, _ in questions] == [1, 2, 3, 4, 5]
    root, hour = server.call(server.kms.tokens.create(["root"], timedelta(hours=1), "operator"))
    transit = server.client(root).secrets.transit
    transit.rotate_key("vault-enc")
    transit.rotate_key("vault-enc")
    transit.update_key_configuration("vault-enc", min_decryption_version=2)
    _age_versions(server, "vault-sign", days=100)
    soon = server.call(server.kms.tokens.create(["root"], timedelta(days=10), "soon"))[1]
    server.call(server.kms.tokens.create(["encrypt:vault-enc"], timedelta(days=365), "later"))
    server.endpoint_token("signer")  # the only endpoint with a token yet
    signer_accessor = next(
        record.accessor for record in server.call(server.kms.tokens.list()) if record.endpoint == "signer"
    )
    answers = {number: server.call(_rows(server.kms.engine, sql)) for number, _, sql in questions}

    keys = answers[1]
    assert [(r["name"], r["type"], r["latest_version"]) for r in keys] == [
        ("vault-enc", "chacha20-poly1305", 3),
        ("vault-sign", "ecdsa-p256", 1),
    ]
    assert keys[0]["last_rotated_at"] is not None and keys[1]["last_rotated_at"] is None
    assert all(r["created_at"] is not None for r in keys)

    assert [(r["name"], r["version_age_days"]) for r in answers[2]] == [("vault-sign", 100)]

    assert [(r["accessor"], r["display_name"], r["endpoint"], r["policies"]) for r in answers[3]] == [
        (hour.accessor, "operator", None, "root"),
        (soon.accessor, "soon", None, "root"),
    ]

    assert [(r["endpoint"], r["policy"], r["token_accessor"]) for r in answers[4]] == [
        ("admin_sign", "admin", None),
        ("manage_keys", "admin", None),
        ("manage_keys", "sign", None),
        ("manage_keys", "verify", None),
        ("signer", "sign", signer_accessor),
        ("verifier", "verify", None),
    ]
    assert answers[4][4]["token_expires_at"] is not None

    assert [(r["version"], bool(r["is_latest"]), bool(r["decrypts"])) for r in answers[5]] == [
        (1, False, False),
        (2, False, True),
        (3, True, True),
    ]


def test_token_policies_and_endpoint_grants_in_the_views(server):
    server.endpoint_token("manage_keys")
    server.call(server.kms.tokens.create(["verify:vault-sign", "encrypt:vault-enc"], None, "ops"))
    tokens = server.call(_rows(server.kms.engine, "SELECT * FROM kms_tokens ORDER BY display_name"))
    by_name = {r["display_name"]: r for r in tokens}
    assert by_name["ops"]["policies"] == "default, encrypt:vault-enc, verify:vault-sign"
    assert by_name["ops"]["expires_at"] is None and by_name["ops"]["expires_in_days"] is None
    endpoint = by_name["endpoint-manage_keys"]
    assert endpoint["endpoint"] == "manage_keys"
    assert endpoint["policies"] == "admin:vault-sign, sign:vault-sign, verify:vault-sign"
    assert endpoint["expires_in_days"] in (364, 365)
    grants = server.call(_rows(server.kms.engine, "SELECT * FROM kms_endpoints WHERE endpoint = 'manage_keys'"))
    assert {r["policy_name"] for r in grants} == {"admin:vault-sign", "sign:vault-sign", "verify:vault-sign"}
    assert {r["token_accessor"] for r in grants} == {endpoint["accessor"]} and {r["token_count"] for r in grants} == {1}


def test_namespaces_roles_periods_and_wrapped_responses_in_the_views(server):
    root = server.root_token()
    client = server.client(root)
    client.sys.create_namespace("team-a")
    in_team = hvac.Client(url=client.url, token=root, namespace="team-a")
    periodic = in_team.auth.token.create(policies=["default"], period="2h", display_name="batchjob")["auth"]
    client.auth.token.create_or_update_role("ops", allowed_policies=["default"])
    wrapped = client.auth.token.create(policies=["default"], wrap_ttl="90s")["wrap_info"]

    tokens = server.call(_rows(server.kms.engine, "SELECT * FROM kms_tokens WHERE display_name = 'token-batchjob'"))
    assert [(r["accessor"], r["namespace"], r["period"]) for r in tokens] == [(periodic["accessor"], "team-a/", 7200)]
    namespaces = server.call(_rows(server.kms.engine, "SELECT * FROM kms_namespaces"))
    assert [(r["path"], r["token_count"]) for r in namespaces] == [("team-a/", 1)]
    roles = server.call(_rows(server.kms.engine, "SELECT * FROM kms_token_roles"))
    assert [(r["namespace"], r["name"]) for r in roles] == [("", "ops")]
    assert json.loads(roles[0]["settings"])["allowed_policies"] == ["default"]
    waiting = server.call(_rows(server.kms.engine, "SELECT * FROM kms_wrapped_responses"))
    assert [(r["accessor"], r["creation_path"], r["ttl"]) for r in waiting] == [
        (wrapped["accessor"], "auth/token/create", 90)
    ]
    assert waiting[0]["wrapped_accessor"] == wrapped["wrapped_accessor"]


def test_the_views_hold_no_secret(server, database_url):
    tokens = [server.endpoint_token(e) for e in ("manage_keys", "crypto", "signer")]
    tokens.append(server.root_token())
    server.client(tokens[1]).secrets.transit.encrypt_data("vault-enc", plaintext=base64.b64encode(b"x").decode())
    secrets = _secrets(server, tokens)
    dump = []
    for view in sorted(VIEWS):
        for row in server.call(_rows(server.kms.engine, f"SELECT * FROM {view}")):  # noqa: S608
            dump.append(repr(row))
            dump.extend(str(value) for value in row.values())
    text_dump = "\n".join(dump).encode()
    assert b"BEGIN PUBLIC KEY" in text_dump and b"vault-enc" in text_dump
    assert [name for name, value in secrets.items() if value in text_dump] == []


@pytest.mark.postgresql
@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)  # roles: PostgreSQL only
def test_a_postgresql_role_granted_the_views_reads_them_and_nothing_else(server, database_url):
    role = f"kms_reader_{uuid.uuid4().hex[:8]}"
    url = normalize_database_url(database_url).replace("postgresql+asyncpg", "postgresql")
    grant = f"GRANT SELECT ON {GRANTED} TO {{role}}"
    assert grant.format(role="kms_reader") in (ROOT / "docs" / "operations.md").read_text()

    async def check() -> None:
        admin = await asyncpg.connect(url)
        try:
            await admin.execute(f"CREATE ROLE {role} LOGIN")
            await admin.execute(grant.format(role=role))
            reader = await asyncpg.connect(url, user=role)
            try:
                assert {r["name"] for r in await reader.fetch("SELECT name FROM kms_keys")} == {
                    "vault-sign",
                    "vault-enc",
                }
                for table in sorted(TABLES):
                    with pytest.raises(asyncpg.InsufficientPrivilegeError):
                        await reader.fetch(f"SELECT * FROM {table}")  # noqa: S608
            finally:
                await reader.close()
        finally:
            await admin.execute(f"REVOKE ALL ON {GRANTED} FROM {role}")
            await admin.execute(f"DROP ROLE {role}")
            await admin.close()

    server.call(check())
