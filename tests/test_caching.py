"""The hot path makes no database query once warm; caches still notice changes within their TTL."""

from __future__ import annotations

import asyncio
import base64
import threading
import time
from datetime import timedelta

import hvac.exceptions
import pytest
from sqlalchemy import event

from kms_service.web.app import BACKGROUND_JOBS

SECRET = base64.b64encode(b"SECRET").decode()


class StatementCounter:
    """The SQL the request path sends. The background jobs (each process's master-key check every second,
    the reaper, ...) run in tasks of their own names and are not counted: they are not per request."""

    def __init__(self, engine) -> None:
        self.statements: list[str] = []
        self.background: list[str] = []
        self.rollover_checked = threading.Event()  # the background master-key check queried the database
        self._engine = engine.sync_engine
        event.listen(self._engine, "before_cursor_execute", self._record)

    def _record(self, conn, cursor, statement, parameters, context, executemany) -> None:
        task = asyncio.current_task()
        if task is not None and task.get_name() in BACKGROUND_JOBS:
            self.background.append(statement)
            if "master_key_rollover" in statement:
                self.rollover_checked.set()
        else:
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
        # The background jobs do query, each in its own task, and are told apart (not hidden).
        assert counter.rollover_checked.wait(30)
        crypto.encrypt_data("vault-enc", plaintext=SECRET)
        assert any("master_key_rollover" in s for s in counter.background)
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

    settings = Settings(
        data_dir=server.data_dir, database_url=server.database_url, master_key=server.kms.master_key.loaded
    )
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


def test_a_made_up_future_version_does_not_query_the_database_on_every_request(start_server):
    """``vault-kms:v2147483647:`` may name a version another node just made, so it is looked for, but at most
    a few times a second per key, not once per request."""
    server = start_server(cache_ttl=300)
    crypto = server.client(server.endpoint_token("crypto")).secrets.transit
    crypto.encrypt_data("vault-enc", plaintext=SECRET)  # warm token and key
    counter = StatementCounter(server.kms.engine)
    started = time.monotonic()
    try:
        for _ in range(100):
            with pytest.raises(hvac.exceptions.InvalidRequest, match="too new"):
                crypto.decrypt_data("vault-enc", ciphertext="vault-kms:v2147483647:" + "A" * 40)
    finally:
        counter.close()
    elapsed = time.monotonic() - started
    probes = elapsed / 0.25 + 1
    queries = [s for s in counter.statements if not s.startswith("BEGIN")]
    # One cheap generation query per probe (before: three queries per request, 300 here).
    assert queries and all("keys.generation" in q for q in queries), queries
    assert len(queries) <= probes + 1, (len(queries), elapsed)


def test_revoking_one_token_drops_only_that_token_from_the_cache(start_server):
    server = start_server(cache_ttl=300)
    kept, _ = server.call(server.kms.tokens.create(["encrypt:vault-enc"], timedelta(hours=1)))
    revoked, info = server.call(server.kms.tokens.create(["encrypt:vault-enc"], timedelta(hours=1)))
    for token in (kept, revoked):
        server.client(token).secrets.transit.encrypt_data("vault-enc", plaintext=SECRET)
    assert server.call(server.kms.tokens.revoke(info.accessor)) is True
    counter = StatementCounter(server.kms.engine)
    try:
        server.client(kept).secrets.transit.encrypt_data("vault-enc", plaintext=SECRET)
        assert counter.statements == []  # still cached
        with pytest.raises(hvac.exceptions.Forbidden):
            server.client(revoked).secrets.transit.encrypt_data("vault-enc", plaintext=SECRET)  # at once, locally
    finally:
        counter.close()


def test_only_the_versions_a_request_uses_are_built(start_server):
    server = start_server(cache_ttl=300)
    admin = server.client(server.endpoint_token("crypto")).secrets.transit
    first = admin.encrypt_data("vault-enc", plaintext=SECRET)["data"]["ciphertext"]
    admin.rotate_key("vault-enc")
    admin.rotate_key("vault-enc")
    # A new node (empty cache) decrypts a v1 ciphertext: v1 is built, v2 is not, v3 (latest) not yet.
    other = start_server(cache_ttl=300)
    crypto = other.client(other.endpoint_token("crypto")).secrets.transit
    assert crypto.decrypt_data("vault-enc", ciphertext=first)["data"]["plaintext"] == SECRET
    key = other.call(other.kms.keys.get("vault-enc", ()))
    assert [key.versions[v].loaded for v in (1, 2, 3)] == [True, False, False]
    crypto.encrypt_data("vault-enc", plaintext=SECRET)
    assert [key.versions[v].loaded for v in (1, 2, 3)] == [True, False, True]


def test_entries_past_half_their_ttl_answer_and_are_read_again_in_the_background(start_server):
    """Token, mount table and key: a request finding an entry past REFRESH_AHEAD of --cache-ttl is answered
    from it, and a background task reads it again; a request past the ttl then finds it fresh and sends no
    SQL of its own (it used to wait for the read: seconds under load)."""
    from kms_service.service.caching import REFRESH_AHEAD, REFRESH_TASK_NAME

    ttl = 2.0
    server = start_server(cache_ttl=ttl)
    crypto = server.client(server.endpoint_token("crypto")).secrets.transit
    by_task: list[tuple[str, str]] = []

    def record(conn, cursor, statement, parameters, context, executemany) -> None:
        task = asyncio.current_task()
        by_task.append((task.get_name() if task is not None else "", statement))

    crypto.encrypt_data("vault-enc", plaintext=SECRET)  # warms token, mount table and key
    warmed = time.monotonic()
    event.listen(server.kms.engine.sync_engine, "before_cursor_execute", record)
    try:
        time.sleep(ttl * REFRESH_AHEAD + 0.1)
        crypto.encrypt_data("vault-enc", plaintext=SECRET)  # from the caches; they are read again meanwhile
        time.sleep(0.3)
        refreshed = [s for name, s in by_task if name == REFRESH_TASK_NAME]
        assert any("tokens" in s for s in refreshed) and any("mounts" in s for s in refreshed), refreshed
        assert any("keys" in s for s in refreshed), refreshed
        time.sleep(max(0.0, warmed + ttl + 0.05 - time.monotonic()))
        by_task.clear()
        crypto.encrypt_data("vault-enc", plaintext=SECRET)  # past the ttl of the warm-up, not of the refresh
        time.sleep(0.2)
        mine = [s for name, s in by_task if name not in (REFRESH_TASK_NAME, *BACKGROUND_JOBS)]
        assert mine == [], mine
    finally:
        event.remove(server.kms.engine.sync_engine, "before_cursor_execute", record)


# -- SingleFlight: one holder at a time, and every waiter wakes in the same turn when it leaves ---------------


async def _turns_between_ends(tasks: list[asyncio.Task]) -> int:
    """Event-loop turns from the first of ``tasks`` to end to the last (a ticker counts the turns)."""
    turn = 0
    ended: list[int] = []

    async def ticker() -> None:
        nonlocal turn
        while True:
            turn += 1
            await asyncio.sleep(0)

    counting = asyncio.create_task(ticker())
    for task in tasks:
        task.add_done_callback(lambda _task: ended.append(turn))
    try:
        await asyncio.gather(*tasks)
    finally:
        counting.cancel()
    return max(ended) - min(ended)


def test_single_flight_wakes_every_waiter_in_the_same_turn():
    """An asyncio.Lock handed over to one waiter per turn: under load a turn serves every ready request (16 ms
    at 256 connections on one core), so the 200th request waiting for a cache load waited 3 s."""
    from kms_service.service.caching import SingleFlight

    async def scenario() -> int:
        flights = SingleFlight()
        loaded = asyncio.Event()
        holding = asyncio.Event()

        async def holder() -> None:
            async with flights("key"):
                holding.set()
                await loaded.wait()

        async def waiter() -> None:
            async with flights("key"):
                pass  # the cache is filled: nothing to load

        first = asyncio.create_task(holder())
        await holding.wait()
        waiters = [asyncio.create_task(waiter()) for _ in range(200)]
        await asyncio.sleep(0.01)
        assert not any(task.done() for task in waiters)  # they do wait for the holder
        loaded.set()
        await first
        return await _turns_between_ends(waiters)

    assert asyncio.run(scenario()) <= 1


def test_single_flight_after_a_failed_load_the_next_waiter_loads_and_only_one_at_a_time():
    from kms_service.service.caching import SingleFlight

    async def scenario() -> tuple[int, int, int]:
        flights = SingleFlight()
        cache: dict[str, int] = {}
        loads = holders = most_holders = 0

        async def get(fail: bool) -> int | None:
            nonlocal loads, holders, most_holders
            async with flights("key"):
                holders += 1
                most_holders = max(most_holders, holders)
                try:
                    if "key" not in cache:
                        loads += 1
                        await asyncio.sleep(0.01)  # the database read
                        if fail:
                            raise ConnectionError("database away")
                        cache["key"] = 1
                    return cache["key"]
                finally:
                    holders -= 1

        failing = asyncio.create_task(get(fail=True))
        await asyncio.sleep(0)
        others = [asyncio.create_task(get(fail=False)) for _ in range(20)]
        with pytest.raises(ConnectionError):
            await failing
        assert await asyncio.gather(*others) == [1] * 20
        return loads, most_holders, len(flights._flights)

    loads, most_holders, left = asyncio.run(scenario())
    assert (loads, most_holders, left) == (2, 1, 0)


def test_single_flight_a_cancelled_waiter_leaves_the_holder_and_the_others_alone():
    from kms_service.service.caching import SingleFlight

    async def scenario() -> list[str]:
        flights = SingleFlight()
        done: list[str] = []
        release = asyncio.Event()

        async def hold(name: str, wait: bool) -> None:
            async with flights("key"):
                if wait:
                    await release.wait()
                done.append(name)

        holder = asyncio.create_task(hold("holder", True))
        await asyncio.sleep(0)
        cancelled = asyncio.create_task(hold("cancelled", False))
        other = asyncio.create_task(hold("other", False))
        await asyncio.sleep(0)
        cancelled.cancel()
        await asyncio.sleep(0)
        release.set()
        await asyncio.gather(holder, other)
        assert cancelled.cancelled()
        return done

    assert asyncio.run(scenario()) == ["holder", "other"]


@pytest.mark.parametrize("cache", ["usage reservation", "key", "token"])
def test_requests_waiting_for_one_load_all_go_on_when_it_ends(start_server, monkeypatch, cache):
    """The wiring: the requests that find a cold entry (the first burst after an idle spell) wait for one
    database read or reservation, then all go on in the same turn, not one per turn. A key's version is
    built once for all of them (an RSA key takes a millisecond and more), not once per request."""
    from kms_service.service.usage import ENCRYPTIONS

    server = start_server()
    kms = server.kms
    token = server.endpoint_token("crypto")
    server.client(server.root_token()).secrets.transit.create_key("rsa-burst", key_type="rsa-2048")
    key = server.call(kms.keys.get("vault-enc"))
    rsa_type = server.call(kms.keys.get("rsa-burst")).key_type
    builds = []
    build = rsa_type.load

    def slow_build(material: bytes):  # as an RSA-4096 key's checks take, on a slow machine
        builds.append(1)
        time.sleep(0.05)
        return build(material)

    monkeypatch.setattr(rsa_type, "load", slow_build)

    async def burst() -> int:
        if cache == "usage reservation":
            await kms.usage.flush(idle_for=0)  # every reservation given back, as after 10 s idle
            make = lambda: kms.usage.spend(key, ENCRYPTIONS, [1])  # noqa: E731
        elif cache == "key":
            kms.keys.forget(None)
            make = lambda: kms.keys.get("rsa-burst")  # noqa: E731
        else:
            kms.tokens._drop_all(None)
            make = lambda: kms.tokens.authenticate(token)  # noqa: E731
        return await _turns_between_ends([asyncio.ensure_future(make()) for _ in range(100)])

    # Two turns: the holder's end wakes asyncio.wait's waiter in one, the waiting tasks run in the next. A turn
    # count, not a time: a slow machine does not change it (an await added on the waiters' path would).
    assert server.call(burst()) <= 2
    assert len(builds) == (1 if cache == "key" else 0), len(builds)


# -- RefreshingCache: a load racing a change never puts back what it read ------------------------------------


@pytest.mark.parametrize("on_race", ["cache due", "answer only"])
def test_a_change_published_during_a_load_never_leaves_its_value_trusted(on_race):
    """The loader reads ``old``; a change is published before it returns. CACHE_DUE caches the value as due
    (the next use loads again), ANSWER_ONLY caches nothing: either way the next use reads ``new``."""
    from sqlalchemy.ext.asyncio import create_async_engine

    from kms_service.service.caching import OnRace, RefreshingCache
    from kms_service.service.database_watch import DatabaseWatch
    from kms_service.service.invalidation import Change, Invalidator, Kind

    async def scenario() -> list[str]:
        engine = create_async_engine("sqlite+aiosqlite://")
        invalidator = Invalidator()
        stored = {"value": "old"}
        reading, published = asyncio.Event(), asyncio.Event()

        async def load(key: str, held: str | None, request: None) -> str:
            value = stored["value"]
            reading.set()
            await published.wait()  # the change commits and is published after this read
            return value

        cache: RefreshingCache[str, str, None] = RefreshingCache(
            ttl=60.0,
            watch=DatabaseWatch(engine, invalidator, 10.0),
            invalidator=invalidator,
            load=load,
            on_race=OnRace(on_race),
        )
        invalidator.subscribe(Kind.KEY, lambda change: cache.drop("k"))
        first = asyncio.create_task(cache.get("k", None))
        await reading.wait()
        stored["value"] = "new"
        invalidator.publish([Change(Kind.KEY, "k")])
        published.set()
        answers = [await first]
        answers.append(await cache.get("k", None))
        await cache.stop_refreshing()
        await engine.dispose()
        return answers

    assert asyncio.run(scenario()) == ["old", "new"]


def test_revoking_a_parent_drops_it_and_every_batch_token_it_made_from_the_cache(start_server):
    """A token and the batch tokens it made share its accessor as their cache alias: revoking it drops them
    all at once, whichever was used last."""
    server = start_server(cache_ttl=300)
    parent, info = server.call(server.kms.tokens.create(["root"], timedelta(hours=1)))
    children = [
        server.client(parent).auth.token.create(policies=["encrypt:vault-enc"], type="batch")["auth"]["client_token"]
        for _ in range(2)
    ]
    for token in (parent, *children):  # the children used after their parent
        server.client(token).secrets.transit.encrypt_data("vault-enc", plaintext=SECRET)
    assert server.call(server.kms.tokens.revoke(info.accessor)) is True
    for token in (parent, *children):
        with pytest.raises(hvac.exceptions.Forbidden):
            server.client(token).secrets.transit.encrypt_data("vault-enc", plaintext=SECRET)
