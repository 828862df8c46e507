"""Key lifecycle over HTTP and the engine's small endpoints, through hvac with its default settings:
create (upsert), delete, trim, config with auto_rotate_period, auto-rotation, config/keys, cache-config,
datakey, random and hash. Every test runs on SQLite and PostgreSQL."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from datetime import UTC, datetime, timedelta

import hvac.exceptions
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from cryptography.x509.oid import NameOID
from sqlalchemy import update

from kms_service.service import utcnow
from kms_service.storage import models as m

SECRET = base64.b64encode(b"a secret").decode()
# A type this server has had from the start, so these tests do not depend on the key-type registry.
TYPE = "chacha20-poly1305"


@pytest.fixture
def vault(server):
    return server.client(server.root_token())


def test_create_is_an_upsert_and_the_key_works(vault):
    transit = vault.secrets.transit
    created = transit.create_key("app", key_type=TYPE, exportable=True)
    assert created["data"]["type"] == TYPE and created["data"]["exportable"] is True
    assert created["data"]["latest_version"] == 1
    # Writing again changes nothing (Vault ignores the new parameters).
    again = transit.create_key("app", key_type="ecdsa-p256")
    assert again["data"]["type"] == TYPE
    ciphertext = transit.encrypt_data("app", plaintext=SECRET)["data"]["ciphertext"]
    assert transit.decrypt_data("app", ciphertext=ciphertext)["data"]["plaintext"] == SECRET
    assert transit.read_key("app")["data"]["name"] == "app"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"type": "no-such-type"}, "unknown key type"),
        ({"type": "ecdsa-p256", "derived": True, "status": 500}, "not supported for keys of type ecdsa-p256"),
        ({"type": TYPE, "convergent_encryption": True}, "convergent encryption requires derivation"),
        ({"type": TYPE, "auto_rotate_period": "30m"}, "at least an hour"),
    ],
    ids=["unknown-type", "derived-ecdsa", "convergent-underived", "short-rotation"],
)
def test_bad_creates_are_400s_and_create_nothing(vault, params, message):
    # hvac's create_key checks types itself; its generic write sends what a script would. Vault answers a
    # derivation request on a type that cannot derive with 500 (a plain error); kept for its clients.
    params = dict(params)  # the table is shared by every run
    error = hvac.exceptions.InternalServerError if params.pop("status", 400) == 500 else hvac.exceptions.InvalidRequest
    with pytest.raises(error, match=message):
        vault.write("transit/keys/never", **params)
    with pytest.raises(hvac.exceptions.InvalidPath):
        vault.secrets.transit.read_key("never")


def test_creating_needs_the_create_capability(server):
    # The seed's admin policy may read its key and write below it, not create keys.
    admin = server.client(server.endpoint_token("admin_enc"))
    with pytest.raises(hvac.exceptions.Forbidden):
        admin.secrets.transit.create_key("vault-enc-2", key_type=TYPE)


def test_delete_needs_deletion_allowed(vault):
    transit = vault.secrets.transit
    transit.create_key("doomed", key_type=TYPE)
    with pytest.raises(hvac.exceptions.InvalidRequest, match="deletion is not allowed for this key"):
        transit.delete_key("doomed")
    transit.update_key_configuration("doomed", deletion_allowed=True)
    assert transit.delete_key("doomed").status_code == 204
    with pytest.raises(hvac.exceptions.InvalidPath):
        transit.read_key("doomed")
    with pytest.raises(hvac.exceptions.InvalidRequest, match="could not delete key; not found"):
        transit.delete_key("doomed")


def test_trim_deletes_old_versions_for_good(vault):
    transit = vault.secrets.transit
    transit.create_key("trimmed", key_type=TYPE)
    first = transit.encrypt_data("trimmed", plaintext=SECRET)["data"]["ciphertext"]
    for _ in range(10):
        transit.rotate_key("trimmed")
    transit.update_key_configuration("trimmed", min_decryption_version=3, min_encryption_version=9)
    with pytest.raises(hvac.exceptions.InvalidRequest, match="greater than minimum decryption version"):
        transit.trim_key("trimmed", min_version=4)
    body = transit.trim_key("trimmed", min_version=2)["data"]
    assert body["min_available_version"] == 2
    # Lowering min_decryption_version cannot bring a trimmed version back.
    with pytest.raises(hvac.exceptions.InvalidRequest, match="min available version"):
        transit.update_key_configuration("trimmed", min_decryption_version=1)
    transit.update_key_configuration("trimmed", min_decryption_version=2)
    assert sorted(map(int, transit.read_key("trimmed")["data"]["keys"])) == list(range(2, 12))
    with pytest.raises(hvac.exceptions.InvalidRequest):
        transit.decrypt_data("trimmed", ciphertext=first)


def test_auto_rotate_period_is_read_as_vault_reads_durations(vault):
    transit = vault.secrets.transit
    transit.create_key("rotating", key_type=TYPE, auto_rotate_period="24h")
    assert transit.read_key("rotating")["data"]["auto_rotate_period"] == 86400
    transit.update_key_configuration("rotating", auto_rotate_period=7200)
    assert transit.read_key("rotating")["data"]["auto_rotate_period"] == 7200
    with pytest.raises(hvac.exceptions.InvalidRequest, match="error converting input"):
        transit.update_key_configuration("rotating", auto_rotate_period="soon")
    transit.update_key_configuration("rotating", auto_rotate_period="0s")
    assert transit.read_key("rotating")["data"]["auto_rotate_period"] == 0


async def _age_latest_version(kms, name: str, by: timedelta) -> None:
    async with kms.db.writing() as session:
        key_id = (await kms.keys.get(name, ())).versions  # warm: the key exists
        assert key_id
        await session.execute(update(m.KeyVersion).values(created_at=utcnow() - by))
        kms.db.changed(session)


def test_keys_past_their_period_are_rotated_once_by_the_sweep(server, vault):
    transit = vault.secrets.transit
    transit.create_key("due", key_type=TYPE, auto_rotate_period="1h")
    transit.create_key("not-due", key_type=TYPE, auto_rotate_period="3h")
    transit.create_key("never", key_type=TYPE)
    server.call(_age_latest_version(server.kms, "due", timedelta(hours=2)))
    assert server.call(server.kms.mounts.rotate_due()) == ["due"]
    assert server.call(server.kms.mounts.rotate_due()) == []  # the new version is not due
    assert [transit.read_key(k)["data"]["latest_version"] for k in ("due", "not-due", "never")] == [2, 1, 1]


def test_the_background_job_rotates_due_keys(start_server):
    server = start_server(rotate_check_interval=0.2)
    transit = server.client(server.root_token()).secrets.transit
    transit.create_key("due", key_type=TYPE, auto_rotate_period="1h")
    server.call(_age_latest_version(server.kms, "due", timedelta(hours=2)))
    deadline = time.monotonic() + 10
    while transit.read_key("due")["data"]["latest_version"] != 2:
        assert time.monotonic() < deadline, "the auto-rotation job did not rotate the due key"
        time.sleep(0.1)


def test_encrypt_upserts_a_key_unless_disabled(server, vault):
    transit = vault.secrets.transit
    made = transit.encrypt_data("upserted", plaintext=SECRET, type=TYPE)["data"]
    assert made["key_version"] == 1 and transit.read_key("upserted")["data"]["type"] == TYPE
    assert vault.write("transit/config/keys", disable_upsert=True)["data"] == {"disable_upsert": True}
    assert vault.read("transit/config/keys")["data"] == {"disable_upsert": True}
    with pytest.raises(hvac.exceptions.InvalidRequest, match="encryption key not found"):
        transit.encrypt_data("not-made", plaintext=SECRET, type=TYPE)
    assert transit.create_key("made-explicitly", key_type=TYPE)["data"]["name"] == "made-explicitly"
    # A token that may only encrypt cannot create keys by encrypting.
    encrypter = server.client(server.endpoint_token("encrypter")).secrets.transit
    with pytest.raises(hvac.exceptions.Forbidden):
        encrypter.encrypt_data("vault-enc-new", plaintext=SECRET)


def test_cache_config(vault):
    assert vault.read("transit/cache-config")["data"] == {"size": 0}
    with pytest.raises(hvac.exceptions.InvalidRequest, match="size must be 0 or a value greater or equal to 10"):
        vault.write("transit/cache-config", size=5)
    assert vault.write("transit/cache-config", size=100)["data"] == {"size": 100}
    assert vault.read("transit/cache-config")["data"] == {"size": 100}


@pytest.mark.parametrize("bits", [128, 256, 512])
def test_datakey_plaintext_and_wrapped(vault, bits):
    transit = vault.secrets.transit
    data = transit.generate_data_key("vault-enc", key_type="plaintext", bits=bits)["data"]
    assert len(base64.b64decode(data["plaintext"])) == bits // 8
    assert transit.decrypt_data("vault-enc", ciphertext=data["ciphertext"])["data"]["plaintext"] == data["plaintext"]
    wrapped = transit.generate_data_key("vault-enc", key_type="wrapped", bits=bits)["data"]
    assert "plaintext" not in wrapped and wrapped["ciphertext"].startswith("vault-kms:v1:")


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        ("datakey/plaintext/vault-enc", {"bits": 100}, "invalid bit length"),
        ("datakey/sideways/vault-enc", {}, "must be 'plaintext' or 'wrapped'"),
        ("datakey/plaintext/vault-sign", {}, "not supported for key type"),
        ("random/0", {}, "cannot be less than 1"),
        ("random", {"bytes": 131073}, "should be less than"),
        ("random", {"format": "octal"}, "unsupported encoding format"),
        ("hash", {}, "input missing"),
        ("hash/md5", {"input": SECRET}, "unsupported hash algorithm"),
    ],
    ids=lambda value: value if isinstance(value, str) else None,
)
def test_bad_engine_requests_are_400s(server, vault, path, body, message):
    response = requests.post(f"{server.url}/v1/transit/{path}", json=body, headers={"X-Vault-Token": vault.token})
    assert response.status_code == 400, response.text
    assert message in response.json()["errors"][0]


def test_random_bytes(server, vault):
    transit = vault.secrets.transit
    assert len(base64.b64decode(transit.generate_random_bytes(n_bytes=16)["data"]["random_bytes"])) == 16
    hex_bytes = transit.generate_random_bytes(n_bytes=8, output_format="hex")["data"]["random_bytes"]
    assert len(bytes.fromhex(hex_bytes)) == 8
    headers = {"X-Vault-Token": vault.token}
    for path, size in [("random/24", 24), ("random/platform/12", 12), ("random/platform", 32)]:
        response = requests.post(f"{server.url}/v1/transit/{path}", headers=headers)
        assert len(base64.b64decode(response.json()["data"]["random_bytes"])) == size
    seal = requests.post(f"{server.url}/v1/transit/random/seal/4", headers=headers).json()
    assert seal["warnings"] and len(base64.b64decode(seal["data"]["random_bytes"])) == 4


@pytest.mark.parametrize("algorithm", ["sha2-224", "sha2-256", "sha2-384", "sha2-512", "sha3-256", "sha3-512"])
def test_hash_matches_hashlib(vault, algorithm):
    digest = hashlib.new(algorithm.replace("sha2-", "sha").replace("-", "_"), b"a secret").hexdigest()
    if algorithm.startswith("sha2-"):
        response = vault.secrets.transit.hash_data(hash_input=SECRET, algorithm=algorithm)
    else:  # hvac's hash_data knows only SHA-2; its generic write reaches the rest
        response = vault.write(f"transit/hash/{algorithm}", input=SECRET)
    assert response["data"]["sum"] == digest
    base64_sum = vault.write("transit/hash", input=SECRET, algorithm=algorithm, format="base64")
    assert base64.b64decode(base64_sum["data"]["sum"]).hex() == digest


def test_backup_and_restore_keep_every_version(vault):
    transit = vault.secrets.transit
    transit.create_key("kept", key_type=TYPE)
    old = transit.encrypt_data("kept", plaintext=SECRET)["data"]["ciphertext"]
    transit.rotate_key("kept")
    with pytest.raises(hvac.exceptions.InternalServerError, match="exporting is disallowed"):
        transit.backup_key("kept")
    transit.update_key_configuration("kept", exportable=True)
    with pytest.raises(hvac.exceptions.InternalServerError, match="plaintext backup is disallowed on the policy"):
        transit.backup_key("kept")
    transit.update_key_configuration("kept", allow_plaintext_backup=True)
    backup = transit.backup_key("kept")["data"]["backup"]

    assert transit.restore_key(backup, name="copy").status_code == 204
    assert transit.read_key("copy")["data"]["latest_version"] == 2
    assert transit.decrypt_data("copy", ciphertext=old)["data"]["plaintext"] == SECRET
    with pytest.raises(hvac.exceptions.InternalServerError, match="already exists"):
        transit.restore_key(backup)
    # force replaces the key in place: rotations after the backup are gone, the old versions work.
    transit.rotate_key("kept")
    transit.update_key_configuration("kept", deletion_allowed=True)
    assert transit.restore_key(backup, force=True).status_code == 204
    assert transit.read_key("kept")["data"]["latest_version"] == 2
    assert transit.decrypt_data("kept", ciphertext=old)["data"]["plaintext"] == SECRET


def test_a_forced_restore_destroys_no_version_of_a_key_that_does_not_allow_deletion(server, vault):
    """Replacing a version (or dropping it) destroys it, as a delete would: a forced restore over a key
    without deletion_allowed may only keep every version it holds and add to them."""
    transit = vault.secrets.transit
    transit.create_key("guarded", key_type=TYPE, exportable=True, allow_plaintext_backup=True)
    backup = transit.backup_key("guarded")["data"]["backup"]
    transit.rotate_key("guarded")
    newest = transit.encrypt_data("guarded", plaintext=SECRET)["data"]["ciphertext"]
    transit.create_key("other", key_type=TYPE, exportable=True, allow_plaintext_backup=True)
    foreign = transit.backup_key("other")["data"]["backup"]
    headers = {"X-Vault-Token": vault.token}
    for replacement in (backup, foreign):  # version 2 dropped; version 1 replaced by another key's
        response = requests.post(
            f"{server.url}/v1/transit/restore/guarded", json={"backup": replacement, "force": True}, headers=headers
        )
        assert response.status_code == 400, response.text
        assert "does not allow deletion" in response.json()["errors"][0]
        assert transit.read_key("guarded")["data"]["latest_version"] == 2
        assert transit.decrypt_data("guarded", ciphertext=newest)["data"]["plaintext"] == SECRET
    # Keeping every version and adding none is no destruction.
    whole = transit.backup_key("guarded")["data"]["backup"]
    assert transit.restore_key(whole, name="guarded", force=True).status_code == 204
    transit.update_key_configuration("guarded", deletion_allowed=True)
    assert transit.restore_key(backup, name="guarded", force=True).status_code == 204
    assert transit.read_key("guarded")["data"]["latest_version"] == 1


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({}, 400, "'backup' must be supplied"),
        ({"backup": "not base64!"}, 400, "invalid backup"),
        ({"backup": base64.b64encode(b'{"format": "other"}').decode()}, 400, "invalid backup"),
    ],
    ids=["missing", "garbage", "foreign"],
)
def test_bad_restores(server, vault, body, status, message):
    response = requests.post(f"{server.url}/v1/transit/restore/x", json=body, headers={"X-Vault-Token": vault.token})
    assert response.status_code == status and message in response.json()["errors"][0]


def test_soft_deleted_keys_are_refused_until_restored(server, vault):
    transit = vault.secrets.transit
    transit.create_key("paused", key_type=TYPE)
    ciphertext = transit.encrypt_data("paused", plaintext=SECRET)["data"]["ciphertext"]
    headers = {"X-Vault-Token": vault.token}
    body = requests.delete(f"{server.url}/v1/transit/keys/paused/soft-delete", headers=headers).json()["data"]
    assert body["soft_deleted"] is True
    for call in (
        lambda: transit.encrypt_data("paused", plaintext=SECRET),
        lambda: transit.decrypt_data("paused", ciphertext=ciphertext),
        lambda: transit.rotate_key("paused"),
        lambda: transit.update_key_configuration("paused", deletion_allowed=True),
    ):
        with pytest.raises(hvac.exceptions.InvalidRequest, match="refusing to use soft-deleted key"):
            call()
    restored = requests.post(f"{server.url}/v1/transit/keys/paused/soft-delete-restore", headers=headers).json()
    assert "soft_deleted" not in restored["data"]
    assert transit.decrypt_data("paused", ciphertext=ciphertext)["data"]["plaintext"] == SECRET


def test_the_wrapping_key_is_made_once_and_shared(start_server):
    first = start_server()
    second = start_server()  # another node on the same database
    pems = [
        requests.get(f"{s.url}/v1/transit/wrapping_key", headers={"X-Vault-Token": s.root_token()}).json()["data"][
            "public_key"
        ]
        for s in (first, second)
    ]
    assert pems[0] == pems[1] and pems[0].startswith("-----BEGIN PUBLIC KEY-----")
    assert load_pem_public_key(pems[0].encode()).key_size == 4096


def _ca_signed(csr_pem: str) -> tuple[str, str]:
    """A leaf certificate for the CSR's key, issued by a fresh CA; returns (leaf PEM, CA PEM)."""
    csr = x509.load_pem_x509_csr(csr_pem.encode())
    assert csr.is_signature_valid
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    now = datetime.now(UTC)

    def issue(subject, public_key):
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_name)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(now + timedelta(days=1))
            .sign(ca_key, hashes.SHA256())
            .public_bytes(serialization.Encoding.PEM)
            .decode()
        )

    return issue(csr.subject, csr.public_key()), issue(ca_name, ca_key.public_key())


def test_csr_then_certificate_chain_for_a_signing_key(start_server):
    node_a, node_b = start_server(cache_ttl=0.3), start_server(cache_ttl=0.3)
    a, b = node_a.client(node_a.root_token()), node_b.client(node_b.root_token())
    b.secrets.transit.read_key("vault-sign")  # node B caches the key before the chain is set
    template = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "signer.example")]))
        .sign(ec.generate_private_key(ec.SECP256R1()), hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
        .decode()
    )
    made = a.write("transit/keys/vault-sign/csr", csr=template)["data"]
    csr = x509.load_pem_x509_csr(made["csr"].encode())
    assert csr.subject.rfc4514_string() == "CN=signer.example"
    public_pem = a.secrets.transit.read_key("vault-sign")["data"]["keys"]["1"]["public_key"]
    assert (
        csr.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
        == public_pem
    )

    leaf, ca = _ca_signed(made["csr"])
    with pytest.raises(hvac.exceptions.InvalidRequest, match="does not match"):
        a.write("transit/keys/vault-sign/set-certificate", certificate_chain=ca + leaf)
    stored = a.write("transit/keys/vault-sign/set-certificate", certificate_chain=leaf + ca)["data"]
    assert stored["certificate_chain"].count("BEGIN CERTIFICATE") == 2
    # The other node shows the chain once its cache entry is checked again; signing still works there.
    deadline = time.monotonic() + 5
    while not b.secrets.transit.read_key("vault-sign")["data"]["keys"]["1"]["certificate_chain"]:
        assert time.monotonic() < deadline, "node B never saw the certificate chain"
        time.sleep(0.1)
    assert b.secrets.transit.sign_data("vault-sign", hash_input=SECRET)["data"]["signature"]
    with pytest.raises(hvac.exceptions.InvalidRequest, match="does not support"):
        a.write("transit/keys/vault-enc/csr")


def _edited_backup(vault, name: str, edit) -> str:
    transit = vault.secrets.transit
    transit.create_key(name, key_type="aes256-gcm96", exportable=True)
    transit.update_key_configuration(name, allow_plaintext_backup=True)
    document = json.loads(base64.b64decode(transit.backup_key(name)["data"]["backup"]))
    edit(document)
    return base64.b64encode(json.dumps(document).encode()).decode()


def _huge_version(document):
    document["versions"] = {"1099511627776": document["versions"]["1"]}
    document["latest_version"] = 1099511627776


def _gap(document):
    document["versions"] = {"1": document["versions"]["1"], "50000000": document["versions"]["1"]}
    document["latest_version"] = 50000000


def _wrong_type(document):
    document["type"] = "ed25519"


def _min_decryption_beyond(document):
    document["settings"]["min_decryption_version"] = 99


def _string_bool(document):
    document["settings"]["exportable"] = "yes"


def _naive_time(document):
    document["versions"]["1"]["created_at"] = "2020-01-01T00:00:00"


def _short_rotation(document):
    document["settings"]["auto_rotate_period"] = 1


def _convergent_underived(document):
    document["settings"]["convergent_encryption"] = True


@pytest.mark.parametrize(
    "edit",
    [
        _huge_version,
        _gap,
        _wrong_type,
        _min_decryption_beyond,
        _string_bool,
        _naive_time,
        _short_rotation,
        _convergent_underived,
    ],
    ids=lambda f: f.__name__.strip("_"),
)
def test_an_edited_backup_is_a_400_and_restores_nothing(server, vault, edit):
    """A backup is input: an edited one is refused whole, before anything is written (red-team findings)."""
    backup = _edited_backup(vault, "origin", edit)
    response = requests.post(
        f"{server.url}/v1/transit/restore/edited", json={"backup": backup}, headers={"X-Vault-Token": vault.token}
    )
    assert response.status_code == 400, response.text
    assert response.json()["errors"][0].startswith("invalid backup")
    assert vault.read("transit/keys/edited") is None


def test_soft_deleted_keys_give_no_material(server, vault):
    transit = vault.secrets.transit
    transit.create_key("hidden", key_type="aes256-gcm96", exportable=True)
    transit.update_key_configuration("hidden", allow_plaintext_backup=True)
    headers = {"X-Vault-Token": vault.token}
    requests.delete(f"{server.url}/v1/transit/keys/hidden/soft-delete", headers=headers).raise_for_status()
    for path in ("export/encryption-key/hidden", "backup/hidden"):
        response = requests.get(f"{server.url}/v1/transit/{path}", headers=headers)
        assert response.status_code == 400 and "soft-deleted" in response.json()["errors"][0], path


def test_encrypt_upserts_symmetric_keys_only(server, vault):
    with pytest.raises(hvac.exceptions.InvalidRequest, match="unknown key type"):
        vault.secrets.transit.encrypt_data("would-be-rsa", plaintext=SECRET, type="rsa-2048")
    assert vault.read("transit/keys/would-be-rsa") is None


def test_the_longest_durations_fit_every_database(vault):
    # 2^31 - 1 seconds is the most: it fits PostgreSQL's INTEGER (36500d did not).
    transit = vault.secrets.transit
    transit.create_key("long", key_type=TYPE, auto_rotate_period=2**31 - 1)
    assert transit.read_key("long")["data"]["auto_rotate_period"] == 2**31 - 1
    with pytest.raises(hvac.exceptions.InvalidRequest, match="out of range"):
        transit.update_key_configuration("long", auto_rotate_period="36500d")


def test_csr_takes_a_json_integer_version(vault):
    made = vault.write("transit/keys/vault-sign/csr", version=1)["data"]
    assert "BEGIN CERTIFICATE REQUEST" in made["csr"]
