"""Endpoint tokens: stable across relationships runs, renewed when close to expiry (real database)."""

from __future__ import annotations

from datetime import timedelta

import requests
from sqlalchemy import update

from kms_service.service import Change, Kind, utcnow
from kms_service.service.tokens import ENDPOINT_TOKEN_TTL
from kms_service.storage import models as m


async def _age_endpoint_tokens(kms, left: timedelta) -> None:
    async with kms.db.writing() as session:
        await session.execute(
            update(m.Token).where(m.Token.endpoint_id.is_not(None)).values(expires_at=utcnow() + left)
        )
        kms.db.changed(session, Change(Kind.TOKEN))  # every cached token, as any writer announces a change


def test_endpoint_token_is_stable_then_renewed_near_expiry(server):
    first, expires = server.call(server.kms.tokens.endpoint_token("crypto"))
    assert timedelta(days=364) < expires - utcnow() <= ENDPOINT_TOKEN_TTL
    again, _ = server.call(server.kms.tokens.endpoint_token("crypto"))
    assert again == first

    server.call(_age_endpoint_tokens(server.kms, timedelta(days=10)))
    renewed, renewed_expires = server.call(server.kms.tokens.endpoint_token("crypto"))
    assert renewed != first
    assert renewed_expires - utcnow() > timedelta(days=364)
    # The old token keeps working until it expires, so running apps are not cut off mid-deploy.
    for token in (first, renewed):
        response = requests.get(f"{server.url}/v1/transit/keys/vault-enc", headers={"X-Vault-Token": token}, timeout=10)
        assert response.status_code == 200


def test_an_expired_endpoint_token_is_replaced(server):
    first, _ = server.call(server.kms.tokens.endpoint_token("crypto"))
    server.call(_age_endpoint_tokens(server.kms, timedelta(seconds=-1)))
    headers = {"X-Vault-Token": first}
    assert requests.get(f"{server.url}/v1/transit/keys/vault-enc", headers=headers, timeout=10).status_code == 403
    renewed, _ = server.call(server.kms.tokens.endpoint_token("crypto"))
    assert renewed != first
    headers = {"X-Vault-Token": renewed}
    assert requests.get(f"{server.url}/v1/transit/keys/vault-enc", headers=headers, timeout=10).status_code == 200
    assert server.call(server.kms.tokens.reap()) == 1  # the expired row goes; the new one stays
