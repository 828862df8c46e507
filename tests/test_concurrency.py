"""Many clients on the same keys at once, against a real server on SQLite and PostgreSQL.

In the spirit of Vault's policy fuzzing (builtin/logical/transit: testPolicyFuzzingCommon): tasks encrypt,
decrypt, rotate and move min_decryption_version/min_encryption_version on the same keys at once; the only
acceptable failure is Vault's "too old" refusal, never a 5xx, never a wrong plaintext. Then a server killed
with SIGKILL while four clients encrypt and one rotates: after a restart, everything it acknowledged is there.
(tests/test_scale_out.py kills one of two PostgreSQL nodes and reads on the other; tests/test_cli.py kills a
server after sequential rotations; this one restarts the same server, on both databases, under writers.)
"""

from __future__ import annotations

import base64
import random
import signal
import threading
import time

import hvac
import hvac.exceptions
import requests
from conftest import TEST_CONFIG
from processes import ServeProcess, cli_env, run_cli

# The exact text we (and Vault) answer for a ciphertext below min_decryption_version.
TOO_OLD = "ciphertext or signature version is disallowed by policy (too old)"
KEYS = {"vault-enc": None, "fuzz-aes": "aes256-gcm96", "fuzz-chacha": "chacha20-poly1305"}
TASKS = 12
OPERATIONS = 60


def root_token(env: dict[str, str]) -> str:
    return run_cli(["token", "create", "--policy", "root", "--ttl", "1h"], env).stdout.strip().splitlines()[-1]


def plaintext(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_encrypt_decrypt_rotate_and_min_versions_at_once_fail_only_as_too_old(database_url, data_dir):
    env = cli_env(database_url, data_dir)
    server = ServeProcess(TEST_CONFIG, env)
    try:
        token = root_token(env)
        setup = hvac.Client(url=server.url, token=token)
        for name, key_type in KEYS.items():
            if key_type is not None:
                setup.secrets.transit.create_key(name, key_type=key_type)
        made: list[tuple[str, str, str]] = []  # (key, ciphertext, plaintext), shared by every task
        unexpected: list[str] = []
        counts = {"encrypt": 0, "decrypt": 0, "too old": 0, "rotate": 0, "config": 0}
        lock = threading.Lock()

        def task(seed: int) -> None:
            rng = random.Random(seed)
            client = hvac.Client(url=server.url, token=token)
            for i in range(OPERATIONS):
                name = rng.choice(list(KEYS))
                action = rng.choices(["encrypt", "decrypt", "rotate", "config"], weights=[4, 4, 1, 1])[0]
                try:
                    if action == "encrypt" or (action == "decrypt" and not made):
                        text = plaintext(f"task {seed} item {i}")
                        ciphertext = client.secrets.transit.encrypt_data(name, text)["data"]["ciphertext"]
                        with lock:
                            made.append((name, ciphertext, text))
                            counts["encrypt"] += 1
                    elif action == "decrypt":
                        key, ciphertext, text = rng.choice(made)
                        try:
                            got = client.secrets.transit.decrypt_data(key, ciphertext)["data"]["plaintext"]
                        except hvac.exceptions.InvalidRequest as exc:
                            if exc.errors != [TOO_OLD]:
                                raise
                            with lock:
                                counts["too old"] += 1
                            continue
                        if got != text:
                            unexpected.append(f"{key}: {ciphertext} decrypted to {got!r}, not {text!r}")
                        with lock:
                            counts["decrypt"] += 1
                    elif action == "rotate":
                        client.secrets.transit.rotate_key(name)
                        with lock:
                            counts["rotate"] += 1
                    else:
                        # Both bounds at once, within the latest version read: always a valid setting, whatever
                        # the other tasks do (rotations only raise the latest version).
                        latest = client.secrets.transit.read_key(name)["data"]["latest_version"]
                        min_dec = rng.randint(1, latest)
                        # hvac checks min_encryption_version is 0 or above min_decryption_version.
                        min_enc = rng.choice([0, *range(min_dec + 1, latest + 1)])
                        client.secrets.transit.update_key_configuration(
                            name, min_decryption_version=min_dec, min_encryption_version=min_enc
                        )
                        with lock:
                            counts["config"] += 1
                except Exception as exc:  # noqa: BLE001 - anything but "too old" is a finding
                    unexpected.append(f"{action} {name}: {exc!r}")

        threads = [threading.Thread(target=task, args=(seed,)) for seed in range(TASKS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(300)
        assert unexpected == []
        assert all(counts.values()), counts  # every kind of operation ran, and "too old" did happen

        # Afterwards, with every version open again, every ciphertext decrypts to its plaintext.
        for name in KEYS:
            setup.secrets.transit.update_key_configuration(name, min_decryption_version=1, min_encryption_version=0)
            batch = [{"ciphertext": c} for key, c, _ in made if key == name]
            if batch:
                results = setup.secrets.transit.decrypt_data(name, batch_input=batch)["data"]["batch_results"]
                assert [r.get("plaintext") for r in results] == [t for key, _, t in made if key == name]
        print(f"\nconcurrency fuzz: {counts}")
    finally:
        server.stop()


def test_sigkill_under_four_writers_and_a_rotator_loses_nothing_acknowledged(database_url, data_dir):
    env = cli_env(database_url, data_dir)
    server = ServeProcess(TEST_CONFIG, env)
    token = root_token(env)
    headers = {"X-Vault-Token": token}
    acknowledged: list[tuple[str, str]] = []  # (ciphertext, plaintext)
    rotations: list[int] = []  # the latest_version each acknowledged rotation answered
    stop = threading.Event()
    url = server.url

    def writer(n: int) -> None:
        i = 0
        while not stop.is_set():
            text = plaintext(f"writer {n} item {i}")
            i += 1
            try:
                reply = requests.post(
                    f"{url}/v1/transit/encrypt/vault-enc", json={"plaintext": text}, headers=headers, timeout=5
                )
            except requests.RequestException:
                continue  # the server died: not acknowledged
            if reply.status_code == 200:
                acknowledged.append((reply.json()["data"]["ciphertext"], text))

    def rotator() -> None:
        while not stop.is_set():
            try:
                reply = requests.post(f"{url}/v1/transit/keys/vault-enc/rotate", headers=headers, timeout=5)
            except requests.RequestException:
                continue
            if reply.status_code == 200:
                rotations.append(reply.json()["data"]["latest_version"])
            time.sleep(0.02)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)] + [threading.Thread(target=rotator)]
    for thread in threads:
        thread.start()
    try:
        deadline = time.monotonic() + 60
        while len(acknowledged) < 200 or len(rotations) < 10:
            assert time.monotonic() < deadline, (len(acknowledged), len(rotations))
            time.sleep(0.05)
        server.stop(signal.SIGKILL)
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
        server.stop()

    server = ServeProcess(TEST_CONFIG, env)
    try:
        key = requests.get(f"{server.url}/v1/transit/keys/vault-enc", headers=headers, timeout=10).json()["data"]
        latest = key["latest_version"]
        # One rotator: its acknowledged rotations rise one by one, unless a reply was lost (a timeout under load,
        # or the kill after a commit): then a version exists that was never acknowledged, never the reverse.
        assert rotations == sorted(set(rotations)) and rotations[0] >= 2
        assert max(rotations) <= latest and latest - 1 >= len(rotations)
        assert sorted(key["keys"], key=int) == [str(v) for v in range(1, latest + 1)]
        batch = [{"ciphertext": ciphertext} for ciphertext, _ in acknowledged]
        reply = requests.post(
            f"{server.url}/v1/transit/decrypt/vault-enc", json={"batch_input": batch}, headers=headers, timeout=60
        )
        assert reply.status_code == 200, reply.text
        assert [r.get("plaintext") for r in reply.json()["data"]["batch_results"]] == [t for _, t in acknowledged]
    finally:
        server.stop()
