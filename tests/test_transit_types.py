"""Every key type over HTTP (hvac, default settings), on SQLite: create, use, hmac, export;
what the service did is checked independently with `cryptography` on the exported keys. And bring your own
key: a key wrapped locally for the service's wrapping_key, imported, then used."""

from __future__ import annotations

import base64
import hashlib
import hmac as stdlib_hmac
import json
import os

import hvac.exceptions
import pytest
import requests
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap_with_padding, aes_key_wrap_with_padding
from hvac.constants.transit import ALLOWED_KEY_TYPES as HVAC_KEY_TYPES

from kms_service.keytypes.registry import KEY_TYPES

# The HTTP surface: the database plays no part here (tests of storage run on both).
pytestmark = pytest.mark.sqlite_only


@pytest.fixture
def server(shared_server):
    """The module's server: each test here reads, or makes keys, tokens and policies of its own names."""
    return shared_server


DATA = b"the data"
B64 = base64.b64encode(DATA).decode()


@pytest.fixture
def vault(server):
    return server.client(server.root_token())


def _body(ciphertext: str) -> bytes:
    return base64.b64decode(ciphertext.split(":", 2)[2])


def _check_independently(key_type: str, export_type: str, exported: str, made: str) -> None:
    """Open the ciphertext, or verify the signature, the service made, with cryptography and the exported key."""
    if key_type.startswith("rsa-") and export_type == "signing-key":
        private = serialization.load_pem_private_key(exported.encode(), None)
        pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.AUTO)
        private.public_key().verify(_body(made), DATA, pss, hashes.SHA256())
    elif key_type in ("aes128-gcm96", "aes256-gcm96"):
        body = _body(made)
        assert AESGCM(base64.b64decode(exported)).decrypt(body[:12], body[12:], None) == DATA
    elif key_type == "chacha20-poly1305":
        body = _body(made)
        assert ChaCha20Poly1305(base64.b64decode(exported)).decrypt(body[:12], body[12:], None) == DATA
    elif key_type.startswith("rsa-"):
        private = serialization.load_pem_private_key(exported.encode(), None)
        oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
        assert private.decrypt(_body(made), oaep) == DATA
    elif key_type.startswith("ecdsa-"):
        public = serialization.load_pem_private_key(exported.encode(), None).public_key()
        public.verify(_body(made), DATA, ec.ECDSA(hashes.SHA256()))
    elif key_type == "ed25519":
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        Ed25519PrivateKey.from_private_bytes(base64.b64decode(exported)[:32]).public_key().verify(_body(made), DATA)


@pytest.mark.parametrize("key_type", sorted(KEY_TYPES))
def test_every_key_type_over_http(vault, key_type):
    name = f"k-{key_type}"
    params = {"type": key_type, "exportable": True}
    if key_type == "hmac":
        params["key_size"] = 48
    transit = vault.secrets.transit
    if key_type in HVAC_KEY_TYPES:
        transit.create_key(name, key_type=key_type, exportable=True)
    else:  # aes128-gcm96, xchacha20-poly1305, hmac: hvac refuses them client-side; its generic write does not
        vault.write(f"transit/keys/{name}", **params)
    body = transit.read_key(name)["data"]
    assert body["type"] == key_type and body["latest_version"] == 1
    kt = KEY_TYPES[key_type]
    checks = []
    if kt.supports_encryption:
        made = transit.encrypt_data(name, plaintext=B64)["data"]["ciphertext"]
        assert transit.decrypt_data(name, ciphertext=made)["data"]["plaintext"] == B64
        checks.append(("encryption-key", made))
        batch = transit.encrypt_data(name, batch_input=[{"plaintext": B64, "reference": "r"}])["data"]["batch_results"]
        assert batch[0]["reference"] == "r"
        rewrapped = transit.rewrap_data(name, ciphertext=batch[0]["ciphertext"])["data"]["ciphertext"]
        assert transit.decrypt_data(name, ciphertext=rewrapped)["data"]["plaintext"] == B64
    if kt.supports_signing:
        made = transit.sign_data(name, hash_input=B64, hash_algorithm="sha2-256")["data"]["signature"]
        verified = transit.verify_signed_data(name, hash_input=B64, signature=made, hash_algorithm="sha2-256")
        assert verified["data"]["valid"] is True
        checks.append(("signing-key", made))
    # Every type HMACs with its version's HMAC key (for the hmac type, the key itself).
    mac = transit.generate_hmac(name, hash_input=B64)["data"]["hmac"]
    assert transit.verify_signed_data(name, hash_input=B64, hmac=mac)["data"]["valid"] is True
    hmac_key = base64.b64decode(transit.export_key(name, key_type="hmac-key", version="1")["data"]["keys"]["1"])
    assert len(hmac_key) == (48 if key_type == "hmac" else 32)
    assert _body(mac) == stdlib_hmac.new(hmac_key, DATA, hashlib.sha256).digest()
    for export_type, made in checks:
        exported = transit.export_key(name, key_type=export_type, version="latest")["data"]["keys"]["1"]
        _check_independently(key_type, export_type, exported, made)
    transit.rotate_key(name)
    rotated = transit.read_key(name)["data"]
    assert rotated["latest_version"] == 2
    if key_type == "hmac":
        assert rotated["key_size"] == 48  # a rotation keeps the hmac key's size


def test_export_is_refused_unless_exportable(vault):
    vault.secrets.transit.create_key("sealed-in", key_type="aes256-gcm96")
    with pytest.raises(hvac.exceptions.InvalidRequest, match="private key material is not exportable"):
        vault.read("transit/export/encryption-key/sealed-in")
    assert vault.read("transit/export/encryption-key/no-such-key") is None  # hvac's read: a 404 is None
    vault.secrets.transit.create_key("signer", key_type="ecdsa-p384")
    public = vault.read("transit/export/public-key/signer")["data"]["keys"]["1"]
    assert serialization.load_pem_public_key(public.encode()).curve.name == "secp384r1"


def test_derived_and_convergent_keys(vault):
    transit = vault.secrets.transit
    transit.create_key("derived", key_type="aes256-gcm96", derived=True, convergent_encryption=True, exportable=True)
    context = base64.b64encode(b"tenant-1").decode()
    with pytest.raises(hvac.exceptions.InvalidRequest, match="missing 'context'"):
        transit.encrypt_data("derived", plaintext=B64)
    first = transit.encrypt_data("derived", plaintext=B64, context=context)["data"]["ciphertext"]
    second = transit.encrypt_data("derived", plaintext=B64, context=context)["data"]["ciphertext"]
    assert first == second  # convergent: same plaintext and context, same ciphertext
    other = base64.b64encode(b"tenant-2").decode()
    assert transit.encrypt_data("derived", plaintext=B64, context=other)["data"]["ciphertext"] != first
    assert transit.decrypt_data("derived", ciphertext=first, context=context)["data"]["plaintext"] == B64
    with pytest.raises(hvac.exceptions.InvalidRequest, match="authentication failed"):
        transit.decrypt_data("derived", ciphertext=first, context=other)
    # Recomputed here: the context's key is HKDF-SHA256(version key, no salt, info=context) (Vault's kdf).
    version_key = base64.b64decode(transit.export_key("derived", key_type="encryption-key")["data"]["keys"]["1"])
    context_key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"tenant-1").derive(version_key)
    body = _body(first)
    assert AESGCM(context_key).decrypt(body[:12], body[12:], None) == DATA


def _wrap_locally(wrapping_pem: str, target: bytes) -> str:
    """Vault's BYOK blob, built here from cryptography's primitives (not the service's code)."""
    ephemeral = os.urandom(32)
    public = serialization.load_pem_public_key(wrapping_pem.encode())
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    return base64.b64encode(public.encrypt(ephemeral, oaep) + aes_key_wrap_with_padding(ephemeral, target)).decode()


def test_bring_your_own_key(server, vault):
    wrapping = vault.read("transit/wrapping_key")["data"]["public_key"]
    own_key = os.urandom(32)
    blob = _wrap_locally(wrapping, own_key)
    response = requests.post(
        f"{server.url}/v1/transit/keys/byok/import",
        json={"ciphertext": blob, "type": "aes256-gcm96", "hash_function": "SHA256"},
        headers={"X-Vault-Token": vault.token},
    )
    assert response.status_code == 204, response.text
    body = vault.secrets.transit.read_key("byok")["data"]
    assert body["imported_key"] is True and body["imported_key_allow_rotation"] is False
    # A ciphertext made locally with the key we imported decrypts through the service.
    nonce = os.urandom(12)
    local = "vault:v1:" + base64.b64encode(nonce + AESGCM(own_key).encrypt(nonce, DATA, None)).decode()
    assert vault.secrets.transit.decrypt_data("byok", ciphertext=local)["data"]["plaintext"] == B64
    # Vault's refusals: importing over an existing key, rotating an imported key without allow_rotation.
    again = requests.post(
        f"{server.url}/v1/transit/keys/byok/import",
        json={"ciphertext": blob, "type": "aes256-gcm96"},
        headers={"X-Vault-Token": vault.token},
    )
    assert again.status_code == 500 and "the import path cannot be used with an existing key" in again.text
    with pytest.raises(hvac.exceptions.InternalServerError, match="does not allow rotation"):
        vault.secrets.transit.rotate_key("byok")
    # import_version adds version 2 from another local key.
    second_key = os.urandom(32)
    added = requests.post(
        f"{server.url}/v1/transit/keys/byok/import_version",
        json={"ciphertext": _wrap_locally(wrapping, second_key)},
        headers={"X-Vault-Token": vault.token},
    )
    assert added.status_code == 204, added.text
    made = vault.secrets.transit.encrypt_data("byok", plaintext=B64)["data"]["ciphertext"]
    assert made.startswith("vault-kms:v2:")
    body = _body(made)
    assert AESGCM(second_key).decrypt(body[:12], body[12:], None) == DATA


def _rsa_der(exponent: int) -> bytes:
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=exponent, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


WEAK_IMPORTS = {
    "aes256 all zero": ("aes256-gcm96", b"\0" * 32, "its key is one byte repeated"),
    "chacha one byte repeated": ("chacha20-poly1305", b"\x41" * 32, "its key is one byte repeated"),
    "hmac all zero": ("hmac", b"\0" * 64, "its key is one byte repeated"),
    "rsa e=3": ("rsa-2048", "e=3", "its RSA public exponent is 3, below 65537"),
}


@pytest.mark.parametrize(("key_type", "raw", "reason"), WEAK_IMPORTS.values(), ids=WEAK_IMPORTS)
def test_weak_key_material_is_refused_on_every_import_path(server, vault, key_type, raw, reason):
    """All-zero or one-byte-repeated symmetric keys and RSA with a small exponent protect nothing: import,
    import_version and restore refuse them with a 400 and change nothing (Vault takes them)."""
    headers = {"X-Vault-Token": vault.token}
    wrapping = vault.read("transit/wrapping_key")["data"]["public_key"]
    weak = _rsa_der(3) if raw == "e=3" else raw
    name = f"weak-{key_type}-{os.urandom(3).hex()}"
    imported = requests.post(
        f"{server.url}/v1/transit/keys/{name}/import",
        json={"ciphertext": _wrap_locally(wrapping, weak), "type": key_type},
        headers=headers,
    )
    assert imported.status_code == 400, imported.text
    assert imported.json()["errors"] == [f"refusing weak key material: {reason}"]
    assert vault.read(f"transit/keys/{name}") is None
    # A strong key imported, then a weak version for it.
    strong = _rsa_der(65537) if raw == "e=3" else os.urandom(len(raw))
    made = requests.post(
        f"{server.url}/v1/transit/keys/{name}/import",
        json={"ciphertext": _wrap_locally(wrapping, strong), "type": key_type, "exportable": True},
        headers=headers,
    )
    assert made.status_code == 204, made.text
    added = requests.post(
        f"{server.url}/v1/transit/keys/{name}/import_version",
        json={"ciphertext": _wrap_locally(wrapping, weak)},
        headers=headers,
    )
    assert added.status_code == 400 and added.json()["errors"] == [f"refusing weak key material: {reason}"]
    assert vault.secrets.transit.read_key(name)["data"]["latest_version"] == 1
    if raw == "e=3":  # a public key alone, too
        public = serialization.load_der_private_key(weak, None).public_key()
        pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        alone = requests.post(
            f"{server.url}/v1/transit/keys/{name}-public/import",
            json={"public_key": pem.decode(), "type": key_type},
            headers=headers,
        )
        assert alone.status_code == 400 and reason in alone.json()["errors"][0]
        return
    # A backup edited to carry the weak key restores nothing.
    vault.secrets.transit.update_key_configuration(name, allow_plaintext_backup=True)
    document = json.loads(base64.b64decode(vault.secrets.transit.backup_key(name)["data"]["backup"]))
    version = document["versions"]["1"]
    envelope = json.loads(base64.b64decode(version["material"]))
    envelope["key"] = base64.b64encode(weak).decode()
    version["material"] = base64.b64encode(json.dumps(envelope).encode()).decode()
    edited = base64.b64encode(json.dumps(document).encode()).decode()
    restored = requests.post(f"{server.url}/v1/transit/restore/{name}-copy", json={"backup": edited}, headers=headers)
    assert restored.status_code == 400, restored.text
    assert restored.json()["errors"] == [f"invalid backup: version 1 is weak key material ({reason})"]
    assert vault.read(f"transit/keys/{name}-copy") is None


def test_byok_export_to_another_wrapping_key(vault):
    transit = vault.secrets.transit
    transit.create_key("source", key_type="aes256-gcm96", exportable=True)
    transit.create_key("destination", key_type="rsa-2048", exportable=True)
    blob = base64.b64decode(vault.read("transit/byok-export/destination/source")["data"]["keys"]["1"])
    private = serialization.load_pem_private_key(
        vault.read("transit/export/encryption-key/destination/1")["data"]["keys"]["1"].encode(), None
    )
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    size = private.key_size // 8
    ephemeral = private.decrypt(blob[:size], oaep)
    unwrapped = aes_key_unwrap_with_padding(ephemeral, blob[size:])
    exported = base64.b64decode(vault.read("transit/export/encryption-key/source/1")["data"]["keys"]["1"])
    assert unwrapped == exported


def test_ecdh_derive_key_matches_a_local_agreement(server, vault):
    vault.secrets.transit.create_key("base", key_type="ecdsa-p256")
    peer = ec.generate_private_key(ec.SECP256R1())
    peer_pem = (
        peer.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    headers = {"X-Vault-Token": vault.token}
    response = requests.post(
        f"{server.url}/v1/transit/derive-key/agreed",
        json={"base_key_name": "base", "peer_public_key": peer_pem, "derived_key_type": "aes256-gcm96"},
        headers=headers,
    )
    assert response.status_code == 204, response.text
    # The peer computes the same key from the base key's public half.
    base_pem = vault.secrets.transit.read_key("base")["data"]["keys"]["1"]["public_key"]
    shared = peer.exchange(ec.ECDH(), serialization.load_pem_public_key(base_pem.encode()))
    local = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=None).derive(shared)
    nonce = os.urandom(12)
    ciphertext = "vault:v1:" + base64.b64encode(nonce + AESGCM(local).encrypt(nonce, DATA, None)).decode()
    assert vault.secrets.transit.decrypt_data("agreed", ciphertext=ciphertext)["data"]["plaintext"] == B64
    assert vault.secrets.transit.read_key("agreed")["data"]["imported_key"] is True
    wrong_curve = (
        ec.generate_private_key(ec.SECP384R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    refused = requests.post(
        f"{server.url}/v1/transit/derive-key/other",
        json={"base_key_name": "base", "peer_public_key": wrong_curve},
        headers=headers,
    )
    assert refused.status_code == 400 and "curve" in refused.json()["errors"][0]
