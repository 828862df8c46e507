"""``kms-service master-key rotate`` while real servers serve, on SQLite and PostgreSQL: nothing fails, no token
or ciphertext changes, a second node follows, a command killed mid-way finishes when run again, and after
``--finish`` only the new key opens the database."""

from __future__ import annotations

import base64
import itertools
import json
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import hvac
import pytest
from conftest import TEST_CONFIG
from processes import COMMAND, ServeProcess, cli_env, run_cli, serve_exit
from sqlalchemy import text

from kms_service.errors import SealError
from kms_service.keyring import KeySettings
from kms_service.keytypes import EncryptOptions
from kms_service.seal import MasterKey, MasterKeyring
from kms_service.service import KMS
from kms_service.settings import Settings

SECRET = base64.b64encode(b"sealed under one master key, read under the next").decode()


def root_token(env: dict[str, str]) -> str:
    return run_cli(["token", "create", "--policy", "root", "--ttl", "1h"], env).stdout.strip().splitlines()[-1]


def status(env: dict[str, str]) -> str:
    return run_cli(["master-key", "status"], env).stdout


def key_ids(text: str) -> set[str]:
    """The master key ids a ``master-key status`` shows as sealing rows."""
    ids: set[str] = set()
    for line in text.splitlines():
        if "sealed by master key:" in line:
            ids |= set(re.findall(r"([0-9a-f]{16}): \d+", line))
    return ids


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def make_versions(client: hvac.Client, count: int) -> list[str]:
    """``count`` rotations of vault-enc, a ciphertext under each version."""
    made = []
    for _ in range(count):
        client.secrets.transit.rotate_key("vault-enc")
        made.append(client.secrets.transit.encrypt_data("vault-enc", SECRET)["data"]["ciphertext"])
    return made


def decrypts(client: hvac.Client, ciphertexts: list[str]) -> bool:
    batch = [{"ciphertext": c} for c in ciphertexts]
    results = client.secrets.transit.decrypt_data("vault-enc", batch_input=batch)["data"]["batch_results"]
    return [r.get("plaintext") for r in results] == [SECRET] * len(ciphertexts)


def test_a_keyring_seals_under_the_newest_key_and_opens_rows_of_every_key_it_holds():
    old, new = MasterKey.generate(), MasterKey.generate()
    under_old = old.seal(b"material", b"aad")
    keyring = MasterKeyring(old)
    # A node holding the old key gets the new one from the rollover row, and the reverse.
    keyring.adopt(old.unwrap(old.wrap(new), new.key_id))
    keyring.accept(new.unwrap(new.wrap(old), old.key_id))
    assert keyring.key_id == new.key_id and keyring.key_ids == sorted([old.key_id, new.key_id])
    assert keyring.unseal(under_old, b"aad") == b"material"
    under_new = keyring.seal(b"material", b"aad")
    assert new.unseal(under_new, b"aad") == b"material"
    with pytest.raises(SealError):
        old.unseal(under_new, b"aad")
    with pytest.raises(SealError):
        keyring.unseal(under_old, b"another row")  # still bound to where it lives
    with pytest.raises(SealError):
        old.unwrap(old.wrap(new), old.key_id)  # a wrapped key is bound to its id
    keyring.retire(old.key_id)
    keyring.retire(new.key_id)  # the sealing key stays
    assert keyring.key_ids == [new.key_id]
    with pytest.raises(SealError):
        keyring.unseal(under_old, b"aad")


async def test_a_process_that_has_not_looked_yet_opens_a_row_resealed_under_the_new_key(database_url, data_dir):
    """Between two of a node's once-a-second looks, a row may be re-sealed under a key it lacks: failing to
    open it makes the node look at once (``MasterKeyring.catch_up``), so the request succeeds."""
    settings = Settings(data_dir=data_dir, database_url=database_url)
    async with KMS.session(settings) as lagging:  # no background job here: it never looks by itself
        async with KMS.session(settings) as rotating:
            await rotating.keys.upsert("made-before", "chacha20-poly1305", KeySettings())
            await rotating.wrapping.public_key_pem()  # the wrapping key: a server secret, re-sealed too
            rollover = await rotating.master_keys.start()
            await rotating.master_keys.reseal(batch_size=1)
        assert lagging.master_key.key_ids == [rollover.old_key_id]
        key = await lagging.keys.get("made-before")  # never loaded here: read from rows under the new key
        assert key is not None and lagging.master_key.key_id == rollover.new_key_id
        ciphertext, _ = key.encrypt(b"after", EncryptOptions())
        assert (await lagging.keys.get("made-before", [1])).decrypt(ciphertext, EncryptOptions()) == b"after"
        assert await lagging.wrapping.public_key_pem()


def test_rotation_while_two_nodes_serve_changes_no_token_or_ciphertext_and_retires_the_old_key(database_url, data_dir):
    env = cli_env(database_url, data_dir)
    a_node = ServeProcess(TEST_CONFIG, env)
    b_node = ServeProcess(TEST_CONFIG, env)  # a second node on the same database (or SQLite file)
    nodes = [a_node, b_node]
    try:
        token = root_token(env)
        clients = [hvac.Client(url=node.url, token=token) for node in nodes]
        before = make_versions(clients[0], 12)
        signature = clients[0].secrets.transit.sign_data("vault-sign", hash_input=SECRET)["data"]["signature"]
        old_key = (data_dir / "master.key").read_text().strip()
        old_id = MasterKey.from_text(old_key, "old").key_id

        failures: list[str] = []
        done = {"crypto": 0, "rotations": 0}
        stop = threading.Event()

        def crypto(n: int) -> None:
            client = hvac.Client(url=nodes[n % 2].url, token=token)
            while not stop.is_set():
                try:
                    made = client.secrets.transit.encrypt_data("vault-enc", SECRET)["data"]["ciphertext"]
                    plain = client.secrets.transit.decrypt_data("vault-enc", made)["data"]["plaintext"]
                    signed = client.secrets.transit.sign_data("vault-sign", hash_input=SECRET)["data"]["signature"]
                    valid = client.secrets.transit.verify_signed_data("vault-sign", SECRET, signature=signed)
                    if plain != SECRET or not valid["data"]["valid"]:
                        failures.append("wrong result")
                    done["crypto"] += 1
                except Exception as exc:  # noqa: BLE001 - every failure is what this test counts
                    failures.append(repr(exc))

        def rotator() -> None:
            # Rows written during the re-seal: new versions from both nodes.
            i = 0
            while not stop.is_set():
                try:
                    clients[i % 2].secrets.transit.rotate_key("vault-enc")
                    done["rotations"] += 1
                except Exception as exc:  # noqa: BLE001
                    failures.append(repr(exc))
                i += 1
                time.sleep(0.05)

        threads = [threading.Thread(target=crypto, args=(n,)) for n in range(4)] + [threading.Thread(target=rotator)]
        for thread in threads:
            thread.start()
        try:
            rotated = run_cli(["master-key", "rotate", "--batch-size", "4"], env)
            new_key = (data_dir / "master.key").read_text().strip()
            new_id = MasterKey.from_text(new_key, "new").key_id
            assert new_id != old_id
            assert f"master-key rotation {old_id} → {new_id}: started" in rotated.stdout
            assert (data_dir / f"master.key.{old_id}.old").read_text().strip() == old_key
            assert "Next:" in rotated.stdout and "master-key rotate --finish" in rotated.stdout
            assert old_key not in rotated.stdout + rotated.stderr and new_key not in rotated.stdout + rotated.stderr
            in_progress = status(env)
            assert f"rotation: {old_id} → {new_id}" in in_progress
            # Under load, before --finish: both nodes already seal under the new key (the rotator's new
            # versions), and the pass left nothing under the old one.
            assert key_ids(in_progress) == {new_id}, in_progress
            finished = run_cli(["master-key", "rotate", "--finish"], env)
            assert f"master key {old_id} is retired" in finished.stdout
        finally:
            stop.set()
            for thread in threads:
                thread.join(30)
        assert failures == []
        assert done["crypto"] > 0 and done["rotations"] > 0, done

        # Both nodes seal under the new key: versions they make now are sealed under it, and nothing is left
        # under the old one.
        for client in clients:
            client.secrets.transit.rotate_key("vault-enc")
        after = status(env)
        assert "rotation: none under way" in after
        assert key_ids(after) == {new_id}, after
        # Nothing a client holds changed: the token, ciphertexts and signature from before.
        for client in clients:
            assert decrypts(client, before)
            assert client.secrets.transit.verify_signed_data("vault-sign", SECRET, signature=signature)["data"]["valid"]
    finally:
        for node in nodes:
            node.stop()

    # The old key opens the database no more: one clear line; the new one does.
    refused = serve_exit(TEST_CONFIG, {**env, "KMS_MASTER_KEY": old_key})
    assert refused.returncode != 0 and "Traceback" not in refused.stderr + refused.stdout
    assert f"the master key (id {old_id}) does not open this database" in refused.stderr + refused.stdout
    server = ServeProcess(TEST_CONFIG, env)
    try:
        assert decrypts(hvac.Client(url=server.url, token=token), before)
    finally:
        server.stop()


def test_a_rotation_killed_after_its_first_batch_finishes_when_run_again(database_url, data_dir):
    old_key = MasterKey.generate().export()
    env = cli_env(database_url, data_dir, KMS_MASTER_KEY=old_key)  # the operator's key in the environment
    server = ServeProcess(TEST_CONFIG, env)
    try:
        token = root_token(env)
        client = hvac.Client(url=server.url, token=token)
        before = make_versions(client, 10)
        for _ in range(120):  # enough one-row batches that the kill lands long before the last
            client.secrets.transit.rotate_key("vault-sign")
    finally:
        server.stop()

    # One version per batch, killed as soon as the first batch is reported.
    with subprocess.Popen(
        [*COMMAND, "master-key", "rotate", "--batch-size", "1"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    ) as command:
        for line in command.stdout:
            if line.startswith("re-sealed 1 key version(s) in 1 batch(es)"):
                command.send_signal(signal.SIGKILL)
                break
        command.wait(60)
    assert command.returncode == -signal.SIGKILL
    halfway = status(env)
    assert int(re.search(r"(\d+) row\(s\) left to re-seal", halfway).group(1)) > 0, halfway
    assert len(key_ids(halfway)) == 2, halfway  # part under the new key, part under the old: killed mid-way
    document = json.loads(run_cli(["master-key", "status", "--json"], env).stdout)  # the same, for scripts
    assert document["remaining"] == int(re.search(r"(\d+) row\(s\) left", halfway).group(1))
    assert set(document["accepted"]) == key_ids(halfway) and document["rollover"]["new_key_id"] in key_ids(halfway)

    # The new key waits in a file (KMS_MASTER_KEY is the operator's); the old key resumes the rotation.
    new_files = list(data_dir.glob("master.key.*.new"))
    assert len(new_files) == 1
    new_key = new_files[0].read_text().strip()
    assert new_files[0].stat().st_mode & 0o077 == 0
    resumed = run_cli(["master-key", "rotate", "--batch-size", "7"], env)
    assert "resumed" in resumed.stdout and "KMS_MASTER_KEY" in resumed.stdout
    assert "0 row(s) left" in status(env)
    # KMS_MASTER_KEY still holds the old key: --finish refuses it, and the old key still opens the database.
    refused = one_line_error(run_cli(["master-key", "rotate", "--finish"], env, check=False))
    assert "refused, nothing changed: this command was given master key" in refused
    assert "rotation:" in status(env) and "0 row(s) left" in status(env)
    env = {**env, "KMS_MASTER_KEY": new_key}
    finished = run_cli(["master-key", "rotate", "--finish"], env)
    assert "retired" in finished.stdout
    server = ServeProcess(TEST_CONFIG, env)
    try:
        assert decrypts(hvac.Client(url=server.url, token=token), before)
    finally:
        server.stop()


def test_bad_inputs_are_one_clear_line_and_change_nothing(database_url, data_dir, tmp_path: Path):
    missing = cli_env("sqlite:///" + str(tmp_path / "nowhere" / "kms.db"), tmp_path / "nowhere")
    assert "no database" in one_line_error(run_cli(["master-key", "rotate"], missing, check=False))
    assert not (tmp_path / "nowhere" / "master.key").exists()

    env = cli_env(database_url, data_dir)
    ServeProcess(TEST_CONFIG, env).stop()
    before = status(env)
    wrong = {**env, "KMS_MASTER_KEY": MasterKey.generate().export()}
    assert "does not open this database" in one_line_error(run_cli(["master-key", "rotate"], wrong, check=False))
    no_rotation = one_line_error(run_cli(["master-key", "rotate", "--finish"], env, check=False))
    assert "no master-key rotation is under way" in no_rotation
    usage = run_cli(["master-key", "rotate", "--batch-size", "0"], env, check=False)
    assert usage.returncode == 2 and "Traceback" not in usage.stderr
    assert status(env) == before
    assert sorted(p.name for p in data_dir.iterdir() if p.name.startswith("master.key")) == ["master.key"]


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_node_started_with_either_key_during_a_rotation_serves(database_url, data_dir):
    env = cli_env(database_url, data_dir)
    ServeProcess(TEST_CONFIG, env).stop()
    old_key = (data_dir / "master.key").read_text().strip()
    token = root_token(env)
    run_cli(["master-key", "rotate"], env)
    new_key = (data_dir / "master.key").read_text().strip()
    for key in (old_key, new_key):
        node = ServeProcess(TEST_CONFIG, {**env, "KMS_MASTER_KEY": key})
        try:
            client = hvac.Client(url=node.url, token=token)
            assert decrypts(client, make_versions(client, 2))
        finally:
            node.stop()
    after = status(env)
    assert key_ids(after) == {MasterKey.from_text(new_key, "new").key_id}, after


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_every_worker_of_a_serve_seals_under_the_new_key(database_url, data_dir):
    env = cli_env(database_url, data_dir)
    server = ServeProcess(TEST_CONFIG, env, "--workers", "2")
    try:
        token = root_token(env)
        before = make_versions(hvac.Client(url=server.url, token=token), 3)
        run_cli(["master-key", "rotate"], env)
        new_id = MasterKey.from_text((data_dir / "master.key").read_text(), "new").key_id
        # A new connection each time: the kernel spreads them over both workers (SO_REUSEPORT).
        for _ in range(20):
            hvac.Client(url=server.url, token=token).secrets.transit.rotate_key("vault-enc")
        in_progress = status(env)
        assert key_ids(in_progress) == {new_id}, in_progress
        assert decrypts(hvac.Client(url=server.url, token=token), before)
    finally:
        server.stop()


def walk_the_next_steps(database_url: str, data_dir: Path, order: tuple[str, ...]) -> list[str]:
    """From a rotation started with the key in KMS_MASTER_KEY, the printed next steps in ``order`` (and then
    what is left of them, in the printed order): after each step a server started as the operator now starts
    one opens the database and decrypts a ciphertext made before the rotation. What each step printed."""
    old_key = MasterKey.generate().export()
    env = cli_env(database_url, data_dir, KMS_MASTER_KEY=old_key)
    server = ServeProcess(TEST_CONFIG, env)
    try:
        token = root_token(env)
        before = make_versions(hvac.Client(url=server.url, token=token), 2)
    finally:
        server.stop()

    def still_opens(after: str) -> None:
        node = ServeProcess(TEST_CONFIG, env)  # raises when it does not start
        try:
            assert decrypts(hvac.Client(url=node.url, token=token), before), after
        finally:
            node.stop()

    started = run_cli(["master-key", "rotate"], env)
    assert "KMS_MASTER_KEY" in started.stdout
    still_opens("start")
    new_file = next(data_dir.glob("master.key.*.new"))
    said = [started.stdout]
    finished = False
    for step in (*order, *(s for s in ("switch", "delete", "finish") if s not in order)):
        if step == "switch":  # KMS_MASTER_KEY set to the new key, every node restarted
            if not new_file.exists():  # deleted too soon: writing it out again is what the refusal says
                said.append(run_cli(["master-key", "rotate"], env).stdout)
            env = {**env, "KMS_MASTER_KEY": new_file.read_text().strip()}
        elif step == "delete":
            new_file.unlink(missing_ok=True)
        elif step == "finish":
            before_status = status(env)
            result = run_cli(["master-key", "rotate", "--finish"], env, check=False)
            still_opens(step)  # first: with the old key retired, no node of the operator's would start
            if env["KMS_MASTER_KEY"] == old_key:
                said.append(one_line_error(result))
                assert status(env) == before_status  # nothing changed
            else:
                assert result.returncode == 0, result.stderr
                said.append(result.stdout)
                finished = True
            continue
        still_opens(step)
    if not finished:  # the refused --finish, run again now that the operator holds the new key
        said.append(run_cli(["master-key", "rotate", "--finish"], env).stdout)
        still_opens("finish again")
    after = status(env)
    assert "rotation: none under way" in after and key_ids(after) == {
        MasterKey.from_text(env["KMS_MASTER_KEY"], "new").key_id
    }
    return said


@pytest.mark.slow
@pytest.mark.parametrize("order", list(itertools.permutations(("switch", "delete", "finish"))), ids="-".join)
def test_every_order_of_the_next_steps_leaves_a_database_that_opens(database_url, data_dir, order):
    said = walk_the_next_steps(database_url, data_dir, order)
    refusals = [line for line in said if line.startswith("Error:")]
    if order.index("finish") < order.index("switch"):  # --finish run with the old key: refused, then run again
        assert len(refusals) == 1, said
        assert "refused, nothing changed: this command was given master key" in refusals[0]
        assert "the one --finish retires; give it the new master key" in refusals[0]
    else:
        assert refusals == [], said
    assert "is retired" in said[-1]


async def test_finish_refuses_when_the_new_key_alone_does_not_open_a_row(database_url, data_dir, tmp_path):
    """A key version marked as sealed under the new key that the new key does not open (a damaged row):
    --finish stops before the old key goes, names the row, and the old key still opens the database."""
    settings = Settings(data_dir=data_dir, database_url=database_url)
    async with KMS.session(settings) as old_holder:
        await old_holder.keys.upsert("damaged", "chacha20-poly1305", KeySettings())
        rollover = await old_holder.master_keys.start()
        await old_holder.master_keys.reseal()
        new_key = old_holder.master_key.get(rollover.new_key_id)
        async with old_holder.db.writing() as session:
            # One byte of the sealed material flipped; the row still says the new key sealed it.
            await session.execute(
                text(
                    "UPDATE key_versions SET sealed_material = :damaged WHERE key_id = "
                    "(SELECT id FROM keys WHERE name = 'damaged')"
                ),
                {"damaged": b"\x00" * 40 + new_key.seal(b"not this row's material", b"elsewhere")[40:]},
            )
    new_key.write_file(tmp_path / "master.key")
    async with KMS.session(Settings(data_dir=tmp_path, database_url=database_url), create=False) as new_holder:
        with pytest.raises(SealError) as refused:
            await new_holder.master_keys.finish()
        assert str(refused.value) == (
            f"refused, nothing changed: master key {rollover.new_key_id} does not open key damaged version 1, "
            "so it cannot be the only key of this database"
        )
        assert (await new_holder.master_keys.status()).rollover is not None
    async with KMS.session(settings, create=False) as old_holder:  # the old key still opens it
        assert old_holder.master_key.key_ids == sorted([rollover.old_key_id, rollover.new_key_id])


def test_finish_refuses_the_old_key_put_back_in_master_key(database_url, data_dir):
    """With master.key (no KMS_MASTER_KEY): the rotation writes the new key there; an operator who puts the
    old one back (from a backup) before --finish is refused, and 'master-key rotate' writes the new one again."""
    env = cli_env(database_url, data_dir)
    server = ServeProcess(TEST_CONFIG, env)
    try:
        token = root_token(env)
        before = make_versions(hvac.Client(url=server.url, token=token), 2)
    finally:
        server.stop()
    old_key = (data_dir / "master.key").read_text()
    run_cli(["master-key", "rotate"], env)
    new_key = (data_dir / "master.key").read_text()
    (data_dir / "master.key").write_text(old_key)
    before_status = status(env)
    refused = one_line_error(run_cli(["master-key", "rotate", "--finish"], env, check=False))
    new_id = MasterKey.from_text(new_key, "new").key_id
    assert f"the one --finish retires; give it the new master key {new_id}" in refused
    assert f"({data_dir.absolute() / 'master.key'})" in refused  # where the command read the key it was given
    assert status(env) == before_status
    rewritten = run_cli(["master-key", "rotate"], env)
    assert "resumed" in rewritten.stdout and (data_dir / "master.key").read_text() == new_key
    assert "is retired" in run_cli(["master-key", "rotate", "--finish"], env).stdout
    server = ServeProcess(TEST_CONFIG, env)
    try:
        assert decrypts(hvac.Client(url=server.url, token=token), before)
    finally:
        server.stop()


async def test_a_node_still_given_the_retired_key_says_so_while_it_serves(database_url, data_dir, tmp_path, caplog):
    """--finish cannot see another node's key source: a node started with the old key serves on (it adopted
    the new one) and logs, once, that it would not start again until given the new key; a node whose
    master.key now holds the new key says nothing."""
    updated_dir, copied_dir = tmp_path / "updated", tmp_path / "copied"
    async with KMS.session(Settings(data_dir=data_dir, database_url=database_url)) as not_updated:
        copied_dir.mkdir()
        MasterKey.from_text((data_dir / "master.key").read_text(), "old").write_file(copied_dir / "master.key")
        async with KMS.session(Settings(data_dir=copied_dir, database_url=database_url), create=False) as copied:
            rollover = await not_updated.master_keys.start()
            await copied.master_keys.refresh()  # what its every-second check does while it serves
            new_key = not_updated.master_key.get(rollover.new_key_id)
            updated_dir.mkdir()
            for directory in (updated_dir, copied_dir):  # the new key copied into that node's data directory
                new_key.write_file(directory / "master.key")
            async with KMS.session(Settings(data_dir=updated_dir, database_url=database_url), create=False) as updated:
                await updated.master_keys.finish()
            caplog.clear()
            for node in (not_updated, copied, not_updated):
                await node.master_keys.refresh()
            warnings = [r.getMessage() for r in caplog.records if "before it restarts" in r.getMessage()]
            assert warnings == [
                f"this process was started with master key {rollover.old_key_id} "
                f"({data_dir.absolute() / 'master.key'}), which the database no longer accepts: give it the "
                f"current master key {rollover.new_key_id} before it restarts, or it will not start"
            ]
            for node in (not_updated, copied):  # both serve on, under the new key
                assert node.master_key.key_ids == [rollover.new_key_id]
                assert await node.wrapping.public_key_pem()
