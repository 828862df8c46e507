"""Usage counters (service/usage.py): exact under concurrent clients, kept across a restart, never undercounted
by a SIGKILL, and the nonce budget of 96-bit random-nonce keys; on SQLite and PostgreSQL."""

from __future__ import annotations

import ast
import asyncio
import base64
import inspect
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import hvac
import requests
from conftest import TEST_CONFIG
from processes import ServeProcess, cli_env, run_cli

from kms_service import keyring
from kms_service.service import usage
from kms_service.service.usage import BLOCK

B64 = base64.b64encode(b"count me").decode()


def _usage(client: hvac.Client, name: str) -> dict:
    return client.read(f"transit/keys/{name}")["data"].get("usage", {})


def test_counts_are_exact_under_eight_concurrent_clients_and_survive_a_restart(start_server):
    server = start_server()
    root = server.root_token()
    client = server.client(root)
    assert _usage(client, "vault-enc") == {}  # never used: the body is Vault's

    def work(worker: int) -> None:
        mine = hvac.Client(url=server.url, token=root)
        for i in range(20):
            mine.write_data("transit/encrypt/vault-enc", data={"plaintext": B64})
            if i % 5 == 0:
                batch = [{"plaintext": B64}] * 3
                mine.write_data("transit/encrypt/vault-enc", data={"batch_input": batch})
            if i % 2 == 0:
                mine.write_data("transit/sign/vault-sign", data={"input": B64})

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(work, range(8)))
    encryptions = 8 * (20 + 4 * 3)
    signatures = 8 * 10
    used = _usage(client, "vault-enc")["1"]
    assert used["encryptions"] == encryptions and used["signatures"] == 0 and used["last_used"]
    assert _usage(client, "vault-sign")["1"]["signatures"] == signatures

    # Rewrap and datakey count as encryptions of the version they encrypt with.
    ciphertext = client.write_data("transit/encrypt/vault-enc", data={"plaintext": B64})["data"]["ciphertext"]
    client.write_data("transit/keys/vault-enc/rotate", data={})
    client.write_data("transit/rewrap/vault-enc", data={"ciphertext": ciphertext})
    client.write_data("transit/datakey/wrapped/vault-enc", data={})
    usage = _usage(client, "vault-enc")
    assert usage["1"]["encryptions"] == encryptions + 1 and usage["2"]["encryptions"] == 2

    server.stop()  # a clean stop gives back unused reservations
    again = start_server()
    client = again.client(again.root_token())
    assert _usage(client, "vault-enc")["1"]["encryptions"] == encryptions + 1
    assert _usage(client, "vault-sign")["1"]["signatures"] == signatures


def test_a_sigkill_can_only_overcount(database_url, data_dir):
    env = cli_env(database_url, data_dir)
    server = ServeProcess(TEST_CONFIG, env)
    token = run_cli(["token", "create", "--policy", "root", "--ttl", "3600"], env).stdout.strip().split()[-1]
    headers = {"X-Vault-Token": token}
    answered = 0
    try:
        for _ in range(30):
            response = requests.post(
                f"{server.url}/v1/transit/encrypt/vault-enc", json={"plaintext": B64}, headers=headers, timeout=10
            )
            assert response.status_code == 200
            answered += 1
    finally:
        server.stop(signal.SIGKILL)
    restarted = ServeProcess(TEST_CONFIG, env)
    try:
        body = requests.get(f"{restarted.url}/v1/transit/keys/vault-enc", headers=headers, timeout=10).json()
        counted = body["data"]["usage"]["1"]["encryptions"]
        # Every answered encryption was covered by a durable reservation; the unused rest of the block stays.
        assert answered <= counted <= answered + BLOCK
    finally:
        restarted.stop()


def test_the_nonce_budget_warns_then_rotates(start_server):
    server = start_server(nonce_warning_at=5, nonce_rotation_at=8)
    client = server.client(server.root_token())
    # The key's read gives the budget the service applies (the console warns from it).
    assert client.read("transit/keys/vault-enc")["data"]["nonce_budget"] == {"warning_at": 5, "rotation_at": 8}
    assert "nonce_budget" not in client.read("transit/keys/vault-sign")["data"]
    warnings = []
    for _ in range(7):
        answer = client.write_data("transit/encrypt/vault-enc", data={"plaintext": B64})
        assert answer["data"]["key_version"] == 1
        warnings.append(answer["warnings"])
    assert warnings[:4] == [None] * 4
    assert "has made about 5 encryptions with random 96-bit nonces" in warnings[4][0]
    client.write_data("transit/encrypt/vault-enc", data={"plaintext": B64})  # the 8th: rotation starts
    deadline = time.monotonic() + 5
    while client.read("transit/keys/vault-enc")["data"]["latest_version"] == 1:
        assert time.monotonic() < deadline, "the key was not rotated past its nonce budget"
        time.sleep(0.05)
    assert client.read("transit/keys/vault-enc")["data"]["latest_version"] == 2
    fresh = client.write_data("transit/encrypt/vault-enc", data={"plaintext": B64})
    assert fresh["data"]["key_version"] == 2 and fresh["warnings"] is None
    # Signing keys and 192-bit-nonce keys have no such budget.
    for _ in range(9):
        assert client.write_data("transit/sign/vault-sign", data={"input": B64})["warnings"] is None


def test_the_next_block_is_reserved_before_the_uses_run_out_and_kept_for_the_next_burst(start_server):
    """Past half a block, the next one is reserved in the background (busy requests no longer wait for that
    write); a version given back when idle starts its next burst with the block it had grown to. The
    stored count stays exact."""
    from kms_service.service.usage import BLOCK, ENCRYPTIONS

    server = start_server()
    usage = server.kms.usage
    key = server.call(server.kms.keys.get("vault-enc"))

    async def spend(n: int) -> None:
        for _ in range(n):
            await usage.spend(key, ENCRYPTIONS, [1])

    async def settle() -> None:
        await asyncio.sleep(0.3)  # the background reservation's turn

    server.call(spend(BLOCK // 2))
    server.call(settle())
    slot = usage._slots[(key.key_id, 1, ENCRYPTIONS)]
    assert slot.reserved == BLOCK  # half a block left: nothing more yet
    server.call(spend(1))
    server.call(settle())
    assert slot.reserved > BLOCK and slot.used == BLOCK // 2 + 1 and not slot.refilling
    grown = slot.block
    assert grown > BLOCK  # the first block went in well under a second

    server.call(usage.flush(idle_for=0))  # idle: given back, the slot forgotten
    assert (key.key_id, 1, ENCRYPTIONS) not in usage._slots
    server.call(spend(1))
    assert usage._slots[(key.key_id, 1, ENCRYPTIONS)].reserved == grown  # the next burst's first block
    server.call(usage.flush(idle_for=0))
    assert server.call(usage.of(key))["1"]["encryptions"] == BLOCK // 2 + 2


def test_a_use_waiting_for_a_reservation_keeps_its_other_versions_from_the_idle_give_back(start_server):
    """A batch over two versions, one covered and idle for long, one short: while it waits for the
    reservation, the idle give-back runs. The covered version is in use, not given back, so its use is
    counted (found by review: it was answered on a slot already given back, an undercount)."""
    from kms_service.service.usage import ENCRYPTIONS, IDLE_GIVE_BACK

    server = start_server()
    usage = server.kms.usage
    root = server.root_token()
    assert server.client(root).write_data("transit/keys/vault-enc/rotate", data={}) is not None
    key = server.call(server.kms.keys.get("vault-enc", (1, 2)))

    async def race() -> None:
        await usage.spend(key, ENCRYPTIONS, [1])
        usage._slots[(key.key_id, 1, ENCRYPTIONS)].last_used -= IDLE_GIVE_BACK * 2  # idle for long
        async with usage._reserving((key.key_id, ENCRYPTIONS)):
            waiting = asyncio.create_task(usage.spend(key, ENCRYPTIONS, [1, 2]))  # version 2 is short
            await asyncio.sleep(0.05)
            await usage.flush()  # the idle give-back, while the batch waits for the reservation
        await waiting
        await usage.flush(idle_for=0)

    server.call(race())
    counts = server.call(usage.of(key))
    assert counts["1"]["encryptions"] == 2 and counts["2"]["encryptions"] == 1, counts


def test_a_key_short_of_uses_does_not_wait_for_another_keys_reservation(start_server):
    """Reservations are one at a time per key and count, not for the whole process: a burst over many keys
    (the first requests after an idle spell) reserves for each at once, each key's waiters woken by their
    own key's reservation only."""
    from kms_service.service.usage import ENCRYPTIONS

    server = start_server()
    usage = server.kms.usage
    server.client(server.root_token()).secrets.transit.create_key("other-enc", key_type="chacha20-poly1305")
    held = server.call(server.kms.keys.get("vault-enc"))
    other = server.call(server.kms.keys.get("other-enc"))

    async def scenario() -> tuple[bool, bool]:
        await usage.flush(idle_for=0)  # no reservation left: the next use of either key reserves
        async with usage._reserving((held.key_id, ENCRYPTIONS)):  # vault-enc's reservation, under way
            blocked = asyncio.create_task(usage.spend(held, ENCRYPTIONS, [1]))
            await asyncio.wait_for(usage.spend(other, ENCRYPTIONS, [1]), 10)
            await asyncio.sleep(0.05)
            waited = not blocked.done()
        await asyncio.wait_for(blocked, 10)
        return waited, blocked.done()

    assert server.call(scenario()) == (True, True)
    server.call(usage.flush(idle_for=0))
    assert server.call(usage.of(held))["1"]["encryptions"] == 1
    assert server.call(usage.of(other))["1"]["encryptions"] == 1


# -- every use is counted, whatever the entry point ----------------------------------------------------------

# KeyType operations that spend from a version's counts (a random nonce, a signature).
SPENDING_PRIMITIVES = {"encrypt", "encrypt_many", "sign"}
# Calls of a counted operation's name on something that is no Key: (module, the call).
NOT_A_KEY = {
    ("byok.py", "public_key.encrypt"),
    ("certificates.py", "builder.sign"),
    ("sys_wrapping.py", "call.kms.wrapped_responses.rewrap"),  # a wrapping token, not a key
    ("tokens.py", "AESGCM(key).encrypt"),  # a batch token sealed under the token key, not a transit key
}


def test_the_counted_operations_are_every_key_operation_that_spends():
    """``usage.COUNTED`` names each Key method that encrypts or signs, directly or through another one: a new
    one (or a new path through one) fails here until it is counted."""
    tree = ast.parse(Path(inspect.getfile(keyring.Key)).read_text())
    key_class = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Key")
    calls = {
        method.name: {ast.unparse(c.func) for c in ast.walk(method) if isinstance(c, ast.Call)}
        for method in key_class.body
        if isinstance(method, ast.FunctionDef)
    }
    spending = {f"self.key_type.{name}" for name in SPENDING_PRIMITIVES}
    spends: set[str] = set()
    while True:
        more = {m for m, called in calls.items() if called & (spending | {f"self.{s}" for s in spends})} - spends
        if not more:
            break
        spends |= more
    assert spends == set(usage.COUNTED), spends


def _key_uses(function: ast.AST) -> set[str]:
    """The names a function binds to a KeyUse: a parameter or a variable annotated so, or ``as`` of an
    ``async with ....using(...)``."""
    names = set()
    for node in ast.walk(function):
        if isinstance(node, ast.arg | ast.AnnAssign) and node.annotation is not None:
            if ast.unparse(node.annotation) == "KeyUse":
                names.add(node.arg if isinstance(node, ast.arg) else ast.unparse(node.target))
        elif isinstance(node, ast.AsyncWith):
            for item in node.items:
                context = item.context_expr
                if isinstance(context, ast.Call) and ast.unparse(context.func).split(".")[-1] == "using":
                    if isinstance(item.optional_vars, ast.Name):
                        names.add(item.optional_vars.id)
    return names


def test_only_a_key_use_calls_the_counted_operations():
    """No entry point can answer uncounted: outside ``KeyUse`` (usage.py), nothing in the code base calls a
    counted operation but on a KeyUse (the Key model calls its own; keytypes/ holds the primitives)."""
    package = Path(usage.__file__).parents[1]
    key_module = Path(inspect.getfile(keyring.Key))
    found = []
    for path in sorted(package.rglob("*.py")):
        if path.relative_to(package).parts[0] == "keytypes":
            continue
        tree = ast.parse(path.read_text())
        owners: dict[ast.AST, ast.AST] = {}  # each node's enclosing class or function
        for scope in ast.walk(tree):
            if isinstance(scope, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                for node in ast.walk(scope):
                    if node is not scope:
                        owners[node] = scope  # inner scopes are walked later and overwrite: the nearest wins
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            if node.func.attr not in usage.COUNTED:
                continue
            call, receiver = ast.unparse(node.func), ast.unparse(node.func.value)
            scope, scopes = owners.get(node), []
            while scope is not None:
                scopes.append(scope)
                scope = owners.get(scope)
            classes = {s.name for s in scopes if isinstance(s, ast.ClassDef)}
            if path.name == "usage.py" and "KeyUse" in classes:
                continue  # KeyUse itself: it counts
            if path == key_module and "Key" in classes and receiver in ("self", "self.key_type"):
                continue  # a Key method calling another of its own, or its type's primitive
            if any(receiver in _key_uses(s) for s in scopes if not isinstance(s, ast.ClassDef)):
                continue
            if (path.name, call) not in NOT_A_KEY:
                found.append(f"{path.relative_to(package)}:{node.lineno}: {call}")
    assert found == [], found


def _counts(client: hvac.Client, name: str, version: str = "1") -> tuple[int, int]:
    used = _usage(client, name).get(version, {})
    return used.get("encryptions", 0), used.get("signatures", 0)


def test_every_entry_point_that_encrypts_or_signs_counts(start_server, database_url, data_dir, tmp_path):
    """HTTP encrypt (one, and a batch through encrypt_many and one by one), rewrap (one, batch), datakey
    (plaintext, wrapped), sign (one, batch) and the CLI's rewrap: each moves its version's count by its uses."""
    server = start_server()
    client = server.client(server.root_token())
    aad = base64.b64encode(b"aad").decode()
    ciphertexts = [
        client.write_data("transit/encrypt/vault-enc", data={"plaintext": B64})["data"]["ciphertext"] for _ in range(5)
    ]
    entry_points = {
        "encrypt": ("vault-enc", (1, 0), "transit/encrypt/vault-enc", {"plaintext": B64}),
        "encrypt batch": (
            "vault-enc",
            (4, 0),
            "transit/encrypt/vault-enc",
            {"batch_input": [{"plaintext": B64}] * 3 + [{"plaintext": B64, "associated_data": aad}]},
        ),
        "rewrap": ("vault-enc", (1, 0), "transit/rewrap/vault-enc", {"ciphertext": ciphertexts[0]}),
        "rewrap batch": (
            "vault-enc",
            (2, 0),
            "transit/rewrap/vault-enc",
            {"batch_input": [{"ciphertext": c} for c in ciphertexts[1:3]]},
        ),
        "datakey plaintext": ("vault-enc", (1, 0), "transit/datakey/plaintext/vault-enc", {}),
        "datakey wrapped": ("vault-enc", (1, 0), "transit/datakey/wrapped/vault-enc", {}),
        "sign": ("vault-sign", (0, 1), "transit/sign/vault-sign", {"input": B64}),
        "sign batch": ("vault-sign", (0, 2), "transit/sign/vault-sign", {"batch_input": [{"input": B64}] * 2}),
    }
    for what, (name, (encryptions, signatures), path, body) in entry_points.items():
        before = _counts(client, name)
        client.write_data(path, data=body)
        after = _counts(client, name)
        assert (after[0] - before[0], after[1] - before[1]) == (encryptions, signatures), what

    before = _counts(client, "vault-enc")
    source = tmp_path / "ciphertexts.txt"
    source.write_text("\n".join(ciphertexts[3:]) + "\n")
    run_cli(["rewrap", "--key", "vault-enc", str(source)], cli_env(database_url, data_dir))
    assert _counts(client, "vault-enc")[0] - before[0] == 2, "kms-service rewrap"
