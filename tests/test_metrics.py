"""GET /v1/sys/metrics: a real Prometheus scrape of a real server, parsed with prometheus_client's own parser,
on SQLite and PostgreSQL; Vault's JSON form; the ACL in front of it; database errors counted when the
database really fails."""

from __future__ import annotations

import asyncio
import base64
from datetime import timedelta

import asyncpg
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from kms_service.storage.database import normalize_database_url

ENCRYPT_ROUTE = "transit/encrypt/:name"


def scrape(server, token: str) -> dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]:
    """Every sample of a Prometheus scrape: family name → {(sample name, sorted labels): value}."""
    response = requests.get(
        f"{server.url}/v1/sys/metrics", params={"format": "prometheus"}, headers={"X-Vault-Token": token}, timeout=30
    )
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert response.headers["X-Request-Id"]
    families = {}
    for family in text_string_to_metric_families(response.text):
        families[family.name] = {(s.name, tuple(sorted(s.labels.items()))): s.value for s in family.samples}
    return families


def value(families, family: str, sample: str, **labels: str) -> float:
    return families[family].get((sample, tuple(sorted(labels.items()))), 0.0)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_a_scrape_counts_requests_latency_crypto_operations_and_cache_lookups(server):
    root = server.root_token()
    before = scrape(server, root)
    vault = server.client(server.endpoint_token("crypto")).secrets.transit
    batch = [{"plaintext": b64(b"one")}, {"plaintext": b64(b"two")}, {"plaintext": b64(b"three")}]
    results = vault.encrypt_data("vault-enc", plaintext="", batch_input=batch)["data"]["batch_results"]
    vault.decrypt_data("vault-enc", ciphertext=results[0]["ciphertext"])
    # One bad item: the other two are answered, and only they count as operations.
    bad = [{"ciphertext": r["ciphertext"]} for r in results[1:]] + [{"ciphertext": "vault-kms:v1:AAAA"}]
    answer = requests.post(
        f"{server.url}/v1/transit/decrypt/vault-enc",
        json={"batch_input": bad},
        headers={"X-Vault-Token": server.endpoint_token("crypto")},
        timeout=30,
    )
    assert answer.status_code == 400 and answer.json()["data"]["batch_results"][2]["error"]
    signer = server.client(server.endpoint_token("manage_keys")).secrets.transit
    signer.sign_data("vault-sign", hash_input=b64(b"hello"))
    assert requests.get(f"{server.url}/v1/transit/keys/vault-enc", timeout=30).status_code == 403
    assert requests.get(f"{server.url}/v1/no/such/path", timeout=30).status_code == 403

    after = scrape(server, root)

    def grew(family: str, sample: str, **labels: str) -> float:
        return value(after, family, sample, **labels) - value(before, family, sample, **labels)

    requests_total = ("kms_http_requests", "kms_http_requests_total")
    assert grew(*requests_total, route=ENCRYPT_ROUTE, method="POST", status="200") == 1
    assert grew(*requests_total, route="transit/decrypt/:name", method="POST", status="200") == 1
    assert grew(*requests_total, route="transit/decrypt/:name", method="POST", status="400") == 1
    assert grew(*requests_total, route="transit/keys/:name", method="GET", status="403") == 1
    assert grew(*requests_total, route="unmatched", method="GET", status="403") == 1
    # The scrape before this one is counted too, under its own route.
    assert grew(*requests_total, route="sys/metrics", method="GET", status="200") == 1

    latency = "kms_http_request_duration_seconds"
    assert grew(latency, f"{latency}_count", route=ENCRYPT_ROUTE, method="POST") == 1
    assert grew(latency, f"{latency}_sum", route=ENCRYPT_ROUTE, method="POST") > 0
    assert grew(latency, f"{latency}_bucket", route=ENCRYPT_ROUTE, method="POST", le="+Inf") == 1

    crypto = ("kms_crypto_operations", "kms_crypto_operations_total")
    assert grew(*crypto, key_type="chacha20-poly1305", operation="encrypt") == 3
    assert grew(*crypto, key_type="chacha20-poly1305", operation="decrypt") == 3
    assert grew(*crypto, key_type="ecdsa-p256", operation="sign") == 1

    cache = ("kms_cache_lookups", "kms_cache_lookups_total")
    # Warm: decrypt and the decrypt batch (encrypt looks its key up once, for the existence check, and
    # reuses it: the first use of the key may be that lookup's miss).
    assert grew(*cache, cache="key", result="hit") >= 2
    assert grew(*cache, cache="token", result="hit") >= 1
    assert value(after, *cache, cache="key", result="miss") >= 1  # each key's first use
    assert value(after, *cache, cache="token", result="miss") >= 1

    assert value(after, "kms_build_info", "kms_build_info", version=__import__("kms_service").__version__) == 1
    # Labels are route templates: no key name, token or accessor appears anywhere in a scrape.
    text = requests.get(
        f"{server.url}/v1/sys/metrics?format=prometheus", headers={"X-Vault-Token": root}, timeout=30
    ).text
    assert "vault-enc" not in text and root not in text


def test_metrics_need_read_on_sys_metrics(server):
    url = f"{server.url}/v1/sys/metrics?format=prometheus"
    assert requests.get(url, timeout=30).status_code == 403
    encrypter = server.endpoint_token("crypto")
    assert requests.get(url, headers={"X-Vault-Token": encrypter}, timeout=30).status_code == 403
    root = server.root_token()
    server.client(root).sys.create_or_update_acl_policy("metrics", 'path "sys/metrics" { capabilities = ["read"] }')
    reader = server.call(server.kms.tokens.create(["metrics"], timedelta(hours=1)))[0]
    answer = requests.get(url, headers={"X-Vault-Token": reader}, timeout=30)
    assert answer.status_code == 200 and "kms_http_requests_total" in answer.text
    # The metrics token reads metrics and nothing else.
    assert requests.get(f"{server.url}/v1/transit/keys/vault-enc", headers={"X-Vault-Token": reader}).status_code == 403


def test_vaults_json_form_is_the_default(server):
    root = server.root_token()
    headers = {"X-Vault-Token": root}
    requests.get(f"{server.url}/v1/sys/health", timeout=30)
    answer = requests.get(f"{server.url}/v1/sys/metrics", headers=headers, timeout=30)
    assert answer.status_code == 200 and answer.headers["Content-Type"] == "application/json"
    document = answer.json()
    assert set(document) == {"Timestamp", "Gauges", "Points", "Counters", "Samples"}
    health = [
        c
        for c in document["Counters"]
        if c["Name"] == "kms.http.requests" and c["Labels"] == {"route": "sys/health", "method": "GET", "status": "200"}
    ]
    assert len(health) == 1 and health[0]["Count"] == 1
    latency = [s for s in document["Samples"] if s["Name"] == "kms.http.request.duration.seconds"]
    assert latency and all(s["Count"] >= 1 and s["Sum"] > 0 for s in latency)
    assert {"Name": "kms.build.info", "Value": 1.0, "Labels": {"version": __import__("kms_service").__version__}} in (
        document["Gauges"]
    )
    assert requests.get(f"{server.url}/v1/sys/metrics?format=json", headers=headers, timeout=30).status_code == 200
    refused = requests.get(f"{server.url}/v1/sys/metrics?format=statsd", headers=headers, timeout=30)
    assert refused.status_code == 400 and refused.json() == {"errors": ['metric response format "statsd" unknown']}


async def _rename(database_url: str, old: str, new: str) -> None:
    """From outside the server, as an operator's mistake would: rename a table the server reads."""
    statement = f"ALTER TABLE {old} RENAME TO {new}"
    if database_url.startswith("sqlite"):
        import sqlite3

        with sqlite3.connect(database_url.removeprefix("sqlite:///")) as conn:
            conn.execute(statement)
        return
    url = normalize_database_url(database_url).replace("postgresql+asyncpg", "postgresql")
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


@pytest.mark.parametrize("expected", [{"sqlite": "OperationalError", "postgresql": "ProgrammingError"}])
def test_database_errors_are_counted(server, database_url, expected):
    root = server.root_token()
    kind = expected["sqlite" if database_url.startswith("sqlite") else "postgresql"]
    errors = ("kms_database_errors", "kms_database_errors_total")
    assert value(scrape(server, root), *errors, error=kind) == 0
    url, headers = f"{server.url}/v1/transit/config/keys", {"X-Vault-Token": root}
    assert requests.get(url, headers=headers, timeout=30).status_code == 200
    asyncio.run(_rename(database_url, "engine_settings", "engine_settings_moved"))
    try:
        failed = requests.get(url, headers=headers, timeout=30)
        # SQLite reports a missing table as an OperationalError, which the service answers as a database it
        # cannot use (503, hardening); PostgreSQL's undefined table is a ProgrammingError, a plain 500.
        answer = (503, "database unavailable") if kind == "OperationalError" else (500, "internal error")
        assert (failed.status_code, failed.json()) == (answer[0], {"errors": [answer[1]]})
    finally:
        asyncio.run(_rename(database_url, "engine_settings_moved", "engine_settings"))
    assert value(scrape(server, root), *errors, error=kind) == 1
    assert requests.get(url, headers=headers, timeout=30).status_code == 200


def test_tokens_expiring_within_30_days_counted_at_scrape_at_most_once_a_minute(server, monkeypatch):
    from test_caching import StatementCounter

    from kms_service.web import sys_metrics

    root = server.root_token()  # one hour: expires within 30 days
    first = value(scrape(server, root), "kms_tokens_expiring", "kms_tokens_expiring", within="30d")
    for ttl in ("10d", "29d", "31d", "8760h"):
        created = requests.post(
            f"{server.url}/v1/auth/token/create",
            json={"policies": ["root"], "ttl": ttl},
            headers={"X-Vault-Token": root},
        )
        assert created.status_code == 200, created.text
    # Within the minute, a scrape reuses the last count: no query, however often Prometheus asks.
    counter = StatementCounter(server.kms.engine)
    try:
        again = value(scrape(server, root), "kms_tokens_expiring", "kms_tokens_expiring", within="30d")
        # Nor does any transit request ever count tokens.
        crypto = server.client(server.endpoint_token("crypto")).secrets.transit
        for _ in range(20):
            crypto.encrypt_data("vault-enc", plaintext=b64(b"x"))
    finally:
        counter.close()
    assert again == first >= 1
    assert not [s for s in counter.statements if "FROM tokens" in s and "count(" in s.lower()], counter.statements
    monkeypatch.setattr(sys_metrics, "TOKEN_GAUGE_MAX_AGE", 0.0)
    counted = value(scrape(server, root), "kms_tokens_expiring", "kms_tokens_expiring", within="30d")
    assert counted == first + 2  # 10d and 29d; not 31d nor one year


def test_workers_metrics_are_totals_of_every_worker_with_a_worker_label(database_url, tmp_path):
    """serve --workers 2 (real processes, SO_REUSEPORT): whichever worker a scrape reaches, it shows the
    requests every worker answered, each worker's own count, and the shared directory is gone at exit."""
    import re
    import time
    from pathlib import Path

    from processes import ServeProcess, cli_env, run_cli

    data_dir = tmp_path / "data"
    scratch = tmp_path / "tmp"  # TMPDIR: where serve makes its PROMETHEUS_MULTIPROC_DIR
    scratch.mkdir()
    env = cli_env(database_url, data_dir, TMPDIR=str(scratch), KMS_WORKERS="2")
    config = Path(__file__).resolve().parent / "data" / "services.yaml"
    server = ServeProcess(config, env)
    try:
        token = run_cli(["token", "create", "--policy", "root", "--ttl", "1h"], env).stdout.strip().splitlines()[-1]
        shared = list(scratch.glob(f"kms-service-metrics-{server.proc.pid}-*"))
        assert len(shared) == 1 and shared[0].stat().st_mode & 0o077 == 0, shared
        headers = {"X-Vault-Token": token}
        url = f"{server.url}/v1/transit/encrypt/vault-enc"
        for _ in range(40):  # a new connection each: the kernel spreads them over the workers
            assert requests.post(url, json={"plaintext": b64(b"x")}, headers=headers, timeout=30).status_code == 200
        time.sleep(2.5)  # each worker copies its cache counters into the shared files every second
        seen_workers = set()
        for _ in range(12):
            families = scrape(server, token)
            total = value(
                families,
                "kms_http_requests",
                "kms_http_requests_total",
                route=ENCRYPT_ROUTE,
                method="POST",
                status="200",
            )
            assert total == 40, families["kms_http_requests"]
            per_worker = {labels[0][1]: v for (name, labels), v in families["kms_worker_http_requests"].items()}
            assert set(per_worker) <= {"0", "1"} and sum(per_worker.values()) >= 40
            seen_workers |= {w for w, v in per_worker.items() if v > 0}
            crypto = value(
                families,
                "kms_crypto_operations",
                "kms_crypto_operations_total",
                key_type="chacha20-poly1305",
                operation="encrypt",
            )
            assert crypto == 40
            lookups = sum(
                v for (name, labels), v in families["kms_cache_lookups"].items() if ("cache", "key") in labels
            )
            assert lookups >= 40
        assert seen_workers == {"0", "1"}, "the kernel sent every connection to one worker"
        response = requests.get(f"{server.url}/v1/sys/metrics", params={"format": "prometheus"}, headers=headers)
        assert len(re.findall(r'^kms_build_info\{version="[^"]+"\} 1\.0$', response.text, re.M)) == 1
        # Vault's JSON form shows the same totals.
        document = requests.get(f"{server.url}/v1/sys/metrics", headers=headers, timeout=30).json()
        labels = {"route": ENCRYPT_ROUTE, "method": "POST", "status": "200"}
        counted = [
            c["Count"] for c in document["Counters"] if c["Name"] == "kms.http.requests" and c["Labels"] == labels
        ]
        assert counted == [40.0], document["Counters"]
    finally:
        server.stop()
    assert server.proc.returncode == 0
    assert not list(scratch.glob("kms-service-metrics-*"))
