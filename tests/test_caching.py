"""The hot path makes no database query once warm; caches still notice changes within their TTL."""

from __future__ import annotations

import base64
import time
from datetime import timedelta

import hvac.exceptions
import pytest
from sqlalchemy import event

SECRET = base64.b64encode(b"SECRET").decode()


class StatementCounter:
    def __init__(self, engine) -> None:
        self.statements: list[str] = []
        self._engine = engine.sync_engine
        event.listen(self._engine, "before_cursor_execute", self._record)

    def _record(self, conn, cursor, statement, parameters, context, executemany) -> None:
        self.statements.append(statement)

    def close(self) -> None:
        event.remove(self._engine, "before_cursor_execute", self._record)


def test_warm_encrypt_decrypt_sign_verify_make_no_sql(start_server):
    server = start_server(cache_ttl=300)
    crypto = server.client(server.endpoint_token("crypto")).secrets.transit
    signer = server.client(server.endpoint_token("manage_keys")).secrets.transit
    ciphertext = crypto.encrypt_data("vault-enc", plaintext=SECRET)["data"]["ciphertext"]  # warms token + key
    signature = signer.sign_data("vault-sign", hash_input=SECRET)["data"]["signature"]

    counter = StatementCounter(server.kms.engine)
    try:
        for _ in range(100):
            crypto.encrypt_data("vault-enc", plaintext=SECRET)
        assert counter.statements == []
        crypto.decrypt_data("vault-enc", ciphertext=ciphertext)
        crypto.rewrap_data("vault-enc", ciphertext=ciphertext)
        signer.sign_data("vault-sign", hash_input=SECRET)
        signer.verify_signed_data("vault-sign", hash_input=SECRET, signature=signature)
        assert counter.statements == []
        # A rotation is a write: it must reach the database.
        crypto.rotate_key("vault-enc")
        assert any("INSERT INTO key_versions" in s for s in counter.statements)
    finally:
        counter.close()


def test_a_revoked_token_stops_working_within_the_cache_ttl(start_server):
    server = start_server(cache_ttl=0.5)
    token, info = server.call(server.kms.tokens.create(["encrypt:vault-enc"], timedelta(hours=1)))
    vault = server.client(token)
    vault.secrets.transit.encrypt_data("vault-enc", plaintext=SECRET)
    # Revoke the way an operator does it: straight in the database, as the CLI (another process) would.
    other = server.call(_revoke_from_another_process(server, info.accessor))
    assert other is True
    deadline = time.monotonic() + 5
    while True:
        try:
            vault.secrets.transit.encrypt_data("vault-enc", plaintext=SECRET)
        except hvac.exceptions.Forbidden:
            break
        assert time.monotonic() < deadline, "revoked token still accepted after 5 s"
        time.sleep(0.1)


async def _revoke_from_another_process(server, accessor):
    from kms_service.service import KMS
    from kms_service.settings import Settings

    settings = Settings(data_dir=server.data_dir, database_url=server.database_url, master_key=server.kms.master_key)
    async with KMS.session(settings) as other:
        return await other.tokens.revoke(accessor)


@pytest.mark.parametrize("ttl", [0.3])
def test_two_nodes_on_one_database_see_each_others_rotations(start_server, ttl):
    """Several active nodes share one database: a rotation on A is used by B for new ciphertexts, and B
    decrypts A's newest ciphertexts at once (a version newer than B's cache forces a reload)."""
    node_a = start_server(cache_ttl=ttl)
    node_b = start_server(cache_ttl=ttl)
    a = node_a.client(node_a.endpoint_token("crypto")).secrets.transit
    b = node_b.client(node_b.endpoint_token("crypto")).secrets.transit
    assert b.encrypt_data("vault-enc", plaintext=SECRET)["data"]["key_version"] == 1  # B caches v1

    a.rotate_key("vault-enc")
    newest = a.encrypt_data("vault-enc", plaintext=SECRET)["data"]["ciphertext"]
    assert newest.startswith("vault-kms:v2:")
    assert b.decrypt_data("vault-enc", ciphertext=newest)["data"]["plaintext"] == SECRET  # no wait needed

    deadline = time.monotonic() + 5
    while b.encrypt_data("vault-enc", plaintext=SECRET)["data"]["key_version"] != 2:
        assert time.monotonic() < deadline, "node B never picked up version 2"
        time.sleep(0.05)
