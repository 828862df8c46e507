"""The console's files at /ui/ (static, no token, strict headers, nothing else reachable) and the reads it
added to the API: sys/ha-status, sys/endpoints, sys/audit-status and the last hour in sys/metrics."""

from __future__ import annotations

import base64
import hashlib
import re
import socket
import time

import pytest
import requests
from processes import cli_env, run_cli

from kms_service.web.console import CONTENT_SECURITY_POLICY, Console
from kms_service.web.request_audit import AUDIT_KEY

pytestmark = pytest.mark.sqlite_only


def _integrity(content: bytes) -> str:
    return "sha384-" + base64.b64encode(hashlib.sha384(content).digest()).decode()


def _raw_get(url: str, raw_path: str) -> tuple[int, bytes]:
    """A GET with the path sent exactly as given (requests would normalise dot segments)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(f"GET {raw_path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := conn.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def test_page_and_files_are_served_without_a_token_with_strict_headers(shared_server):
    page = requests.get(f"{shared_server.url}/ui/", timeout=10)
    assert page.status_code == 200
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    assert page.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    for directive in ("default-src 'self'", "script-src 'self'", "style-src 'self'", "frame-ancestors 'none'"):
        assert directive in CONTENT_SECURITY_POLICY
    assert "unsafe" not in CONTENT_SECURITY_POLICY
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert page.headers["Referrer-Policy"] == "no-referrer"
    assert "Set-Cookie" not in page.headers
    # Every script, module and style sheet the page names carries the sha384 of the bytes served for it.
    named = re.findall(r'(?:src|href)="\./([^"]+)"[^>]*?integrity="([^"]+)"', page.text)
    assert {name for name, _ in named} >= {"main.js", "api.js", "keys.js", "console.css"}
    for name, digest in named:
        asset = requests.get(f"{shared_server.url}/ui/{name}", timeout=10)
        assert asset.status_code == 200, name
        assert asset.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
        assert asset.headers["X-Content-Type-Options"] == "nosniff"
        assert digest == _integrity(asset.content), name
    # Every module the page's modules import is preloaded with its digest, so none runs unchecked.
    for name, _ in named:
        if name.endswith(".js"):
            source = requests.get(f"{shared_server.url}/ui/{name}", timeout=10).text
            for imported in re.findall(r'from "\./([^"]+)"', source):
                assert imported in {n for n, _ in named}, f"{name} imports {imported}, which the page does not check"
    # No third-party origin anywhere in what the console ships.
    for name, asset in Console().assets.items():
        text = asset.content.decode()
        assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", text), name
        assert "localStorage" not in text and "document.cookie" not in text, name
        assert "innerHTML" not in text and "style=" not in text, name


def test_only_get_and_head_and_only_the_shipped_files(shared_server):
    url = shared_server.url
    head = requests.head(f"{url}/ui/main.js", timeout=10)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["Content-Type"].startswith("text/javascript")
    for method in ("POST", "PUT", "DELETE", "OPTIONS"):
        refused = requests.request(method, f"{url}/ui/", timeout=10)
        assert refused.status_code == 405, method
        assert refused.headers["Allow"] == "GET, HEAD"
    redirect = requests.get(f"{url}/ui", allow_redirects=False, timeout=10)
    assert redirect.status_code == 308 and redirect.headers["Location"] == "/ui/"
    for path in (
        "/ui/nothing.js",
        "/ui/../kms.db",
        "/ui/%2e%2e/kms.db",
        "/ui/..%2fkms.db",
        "/ui/%2e%2e%2f%2e%2e%2fpyproject.toml",
        "/ui/console/../console.py",
        "/ui/..%5c..%5cconsole.py",
        "/ui/console.py",
        "/ui/__init__.py",
        "/ui//etc/passwd",
    ):
        status, body = _raw_get(url, path)
        # Outside /ui/ a normalised path reaches the API (a token is needed); never a file.
        assert status in (403, 404), (path, status)
        assert b"import" not in body and b"root:" not in body and b"SQLite" not in body, path


def test_console_can_be_turned_off(start_server):
    server = start_server(console=False)
    assert requests.get(f"{server.url}/ui/", timeout=10).status_code == 404


def test_ha_status_lists_this_node(shared_server):
    root = shared_server.root_token()
    answer = requests.get(f"{shared_server.url}/v1/sys/ha-status", headers={"X-Vault-Token": root}, timeout=10)
    assert answer.status_code == 200, answer.text
    nodes = answer.json()["data"]["nodes"]
    assert nodes[0]["this_node"] is True and nodes[0]["node_id"] == shared_server.kms.node_id
    assert requests.get(f"{shared_server.url}/v1/sys/ha-status", timeout=10).status_code == 403


def test_ha_status_lists_a_node_once_its_change_is_heard(shared_server):
    """A command rotating a key in the same database is another node to the server: listed once its change arrives."""
    root = shared_server.root_token()
    run_cli(
        ["keys", "rotate", "vault-sign"],
        cli_env(shared_server.database_url, shared_server.data_dir),
    )
    deadline = time.monotonic() + 30
    while True:
        answer = requests.get(f"{shared_server.url}/v1/sys/ha-status", headers={"X-Vault-Token": root}, timeout=10)
        others = [n for n in answer.json()["data"]["nodes"] if not n["this_node"]]
        if others or time.monotonic() > deadline:
            break
        time.sleep(0.05)  # the change log is read every 150 ms
    assert len(others) == 1 and others[0]["active_node"] is True and others[0]["last_echo"].endswith("Z")


def test_endpoints_list_their_grants_and_newest_token(shared_server):
    root = shared_server.root_token()
    token = shared_server.endpoint_token("encrypter")
    looked_up = requests.get(f"{shared_server.url}/v1/auth/token/lookup-self", headers={"X-Vault-Token": token})
    accessor = looked_up.json()["data"]["accessor"]
    answer = requests.request(
        "LIST", f"{shared_server.url}/v1/sys/endpoints", headers={"X-Vault-Token": root}, timeout=10
    )
    assert answer.status_code == 200, answer.text
    data = answer.json()["data"]
    assert "encrypter" in data["keys"] and "crypto" in data["keys"]
    encrypter = data["key_info"]["encrypter"]
    assert encrypter["grants"] == [{"policy": "encrypt", "key": "vault-enc", "policy_name": "encrypt:vault-enc"}]
    assert encrypter["token_accessor"] == accessor and encrypter["token_count"] >= 1
    # An endpoint's own token may not read the others'.
    refused = requests.request("LIST", f"{shared_server.url}/v1/sys/endpoints", headers={"X-Vault-Token": token})
    assert refused.status_code == 403


def test_audit_status_without_an_audit_log_and_needs_sudo(shared_server):
    root = shared_server.root_token()
    answer = requests.get(f"{shared_server.url}/v1/sys/audit-status", headers={"X-Vault-Token": root}, timeout=10)
    assert answer.status_code == 200, answer.text
    assert answer.json()["data"]["enabled"] is False and answer.json()["data"]["sinks"] == []
    token = shared_server.endpoint_token("crypto")
    refused = requests.get(f"{shared_server.url}/v1/sys/audit-status", headers={"X-Vault-Token": token}, timeout=10)
    assert refused.status_code == 403


def test_audit_status_verifies_the_database_sink(start_server):
    server = start_server(audit_db=True)
    root = server.root_token()
    headers = {"X-Vault-Token": root}
    requests.get(f"{server.url}/v1/sys/mounts", headers=headers, timeout=10)
    server.call(server._runner.app[AUDIT_KEY].flush())
    answer = requests.get(f"{server.url}/v1/sys/audit-status?verify=true", headers=headers, timeout=10)
    assert answer.status_code == 200, answer.text
    data = answer.json()["data"]
    assert data["enabled"] is True and data["sinks"][0]["path"] == "db/" and data["last_error"] is None
    assert data["anchors"] and data["anchors"][0]["sink"] == "db"
    verification = data["verification"]
    assert verification["ok"] is True and verification["chains"][0]["records"] >= 2


def test_metrics_report_the_last_hour_by_minute(shared_server):
    root = shared_server.root_token()
    headers = {"X-Vault-Token": root}
    before = requests.get(f"{shared_server.url}/v1/sys/metrics?recent=true", headers=headers, timeout=10).json()[
        "Recent"
    ]
    requests.get(f"{shared_server.url}/v1/transit/keys/nothing-here", headers=headers, timeout=10)
    after = requests.get(f"{shared_server.url}/v1/sys/metrics?recent=true", headers=headers, timeout=10).json()[
        "Recent"
    ]
    assert sum(m["Requests"] for m in after) == sum(m["Requests"] for m in before) + 2
    assert "Recent" not in requests.get(f"{shared_server.url}/v1/sys/metrics", headers=headers, timeout=10).json()
    minute = after[-1]
    assert set(minute) == {"Minute", "Requests", "ServerErrors", "MeanSeconds", "P95Seconds"}
    assert minute["MeanSeconds"] > 0 and minute["ServerErrors"] == 0
