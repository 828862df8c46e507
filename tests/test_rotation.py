"""Concurrent rotations, from several nodes at once, never lose, duplicate or skip a version."""

from __future__ import annotations

import base64
from concurrent.futures import ThreadPoolExecutor

import requests
from sqlalchemy import select

from kms_service.storage import models as m

SECRET = base64.b64encode(b"SECRET").decode()


async def _versions(kms, name):
    async with kms.db.reading() as session:
        key = (await session.execute(select(m.Key).where(m.Key.name == name))).scalar_one()
        versions = (await session.execute(select(m.KeyVersion.version).where(m.KeyVersion.key_id == key.id))).scalars()
        return key.latest_version, sorted(versions)


def test_parallel_rotations_on_two_nodes_are_contiguous(start_server):
    nodes = [start_server(), start_server()]
    tokens = [node.endpoint_token("crypto") for node in nodes]
    ciphertexts = []

    def rotate_and_encrypt(i: int) -> int:
        node, token = nodes[i % 2], tokens[i % 2]
        headers = {"X-Vault-Token": token}
        rotated = requests.post(f"{node.url}/v1/transit/keys/vault-enc/rotate", headers=headers, timeout=60)
        assert rotated.status_code == 200, rotated.text
        encrypted = requests.post(
            f"{node.url}/v1/transit/encrypt/vault-enc", headers=headers, json={"plaintext": SECRET}, timeout=60
        )
        assert encrypted.status_code == 200, encrypted.text
        ciphertexts.append(encrypted.json()["data"]["ciphertext"])
        return rotated.json()["data"]["latest_version"]

    with ThreadPoolExecutor(max_workers=8) as pool:
        acknowledged = list(pool.map(rotate_and_encrypt, range(24)))

    latest, versions = nodes[0].call(_versions(nodes[0].kms, "vault-enc"))
    assert latest == 25
    assert versions == list(range(1, 26))
    assert sorted(acknowledged) == list(range(2, 26))  # every rotation got its own version
    reader = nodes[1].client(tokens[1]).secrets.transit
    for ciphertext in ciphertexts:
        assert reader.decrypt_data("vault-enc", ciphertext=ciphertext)["data"]["plaintext"] == SECRET
