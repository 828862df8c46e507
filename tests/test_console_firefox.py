"""The console in Firefox: Debian's firefox-esr, driven by puppeteer-core over WebDriver BiDi
(tests/clients/console-firefox/walk.mjs; no driver binary and no browser download). Signing in as root and as a
least-privilege token, every page, a key tool checked against the HTTP API, a token revoked by accessor, an
inline script refused by the Content-Security-Policy, every page at phone size, signing out with nothing left
in the browser's storage; no request to another origin and no error in the browser's console."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import requests
from console_browser import OPERATOR_POLICY, PAGES, PHONE, start_server

pytestmark = [pytest.mark.sqlite_only, pytest.mark.slow]

WALK = Path(__file__).parent / "clients" / "console-firefox"
FIREFOX = "/usr/bin/firefox-esr"
PLAINTEXT = "hello from firefox"


def _tools() -> str:
    node = shutil.which("node")
    if node is None or not Path(FIREFOX).exists() or not (WALK / "node_modules" / "puppeteer-core").is_dir():
        message = (
            "the Firefox walk needs Node.js, Debian's firefox-esr and "
            "`npm ci --prefix tests/clients/console-firefox` (make install-test)"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return node


def api(server, token: str, method: str, path: str, **body) -> dict:
    answer = requests.request(
        method, f"{server.url}/v1/{path}", headers={"X-Vault-Token": token}, json=body or None, timeout=10
    )
    assert answer.status_code in (200, 204), answer.text
    return answer.json() if answer.status_code == 200 else {}


@pytest.fixture
def walked(tmp_path, database_templates):
    node = _tools()
    database_templates.sqlite(tmp_path / "kms.db")
    server = start_server(tmp_path, f"sqlite:///{tmp_path / 'kms.db'}")
    try:
        root = server.root_token()
        api(server, root, "POST", "sys/policies/acl/console-operator", policy=OPERATOR_POLICY)
        api(server, root, "POST", "transit/keys/firefox-limited")
        limited = api(server, root, "POST", "auth/token/create", policies=["console-operator"])["auth"]["client_token"]
        victim = api(server, root, "POST", "auth/token/create", policies=["default"])["auth"]
        given = {
            "url": server.url,
            "firefox": FIREFOX,
            "root": root,
            "limited": limited,
            "pages": [[route, heading] for _, route, heading in PAGES],
            "key": {"route": "#/keys/transit/vault-enc", "heading": "transit/vault-enc"},
            "limitedKey": {
                "route": "#/keys/transit/firefox-limited",
                "heading": "transit/firefox-limited",
                "rotatePath": "transit/keys/firefox-limited/rotate",
            },
            "plaintext": PLAINTEXT,
            "phone": PHONE,
            "revoke": victim["accessor"],
            "victim": victim["client_token"],
        }
        # The tokens go on stdin: never in an argument or the environment another process may read.
        done = subprocess.run(
            [node, str(WALK / "walk.mjs")], input=json.dumps(given), capture_output=True, text=True, timeout=300
        )
        report = json.loads(done.stdout) if done.stdout.startswith("{") else {}
        assert done.returncode == 0, (report.get("failedAt"), report.get("problem"), done.stderr[-2000:])
        yield server, given, report
    finally:
        server.stop()


def test_firefox_walks_the_console_as_root_and_as_a_limited_token(walked):
    server, given, report = walked
    assert report["browser"].startswith("firefox/")
    assert report["steps"][-1] == "done"
    # Every page, for both tokens.
    for route, _ in given["pages"]:
        assert report["steps"].count(f"open {route}") >= 2, route

    headers = report["headers"]
    assert "script-src 'self'" in headers["content-security-policy"]
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff" and headers["referrer-policy"] == "no-referrer"
    assert report["integrity"] and all(report["integrity"])
    # Firefox enforces the policy: the inline script did not run, and that was the only violation.
    assert report["inlineScriptRan"] is False
    assert report["violations"] == ["script-src-elem inline"]

    # The key tool's ciphertext is the service's: the API decrypts it; the console's decrypt agrees.
    decrypted = api(server, given["root"], "POST", "transit/decrypt/vault-enc", ciphertext=report["ciphertext"])
    assert base64.b64decode(decrypted["data"]["plaintext"]).decode() == PLAINTEXT
    assert report["decrypted"] == PLAINTEXT
    assert report["plaintextBeforeShown"] is False

    # Revoked from the Tokens page, after a confirmation naming the accessor: the token is refused.
    assert f"Revoke the token with accessor {given['revoke']} " in report["confirmation"]
    assert report["revokedRowsLeft"] == 0
    gone = requests.get(
        f"{server.url}/v1/auth/token/lookup-self", headers={"X-Vault-Token": given["victim"]}, timeout=10
    )
    assert gone.status_code == 403

    assert report["limitedRotateButtons"] == 0
    sideways = {route: width for route, width in report["phoneWidths"].items() if width > PHONE["width"]}
    assert sideways == {}, "pages that scroll sideways at phone size"
    for who in ("root", "limited"):
        left = report[who]
        assert left["storage"] == [0, 0, ""] and left["cookies"] == 0, who
        assert left["navHidden"] is True and left["tokenOnPage"] is False and left["afterReload"] == 0, who

    # Firefox loads a data: font of its own (no request leaves the machine, and the page's policy, which would
    # refuse one from the page, saw none); every other request goes to the service.
    elsewhere = [u for u in report["requests"] if not u.startswith((server.url + "/", "data:font/"))]
    assert elsewhere == [], "a request left the origin"
    # Vault answers an empty LIST with 404; every other failed answer, and any script error, is a fault.
    assert [(s, u) for s, u in report["failed"] if not (s == 404 and "list=true" in u)] == []
    # Firefox logs the refused inline script as an error too: that one, and no other.
    refused = [e for e in report["errors"] if e.startswith("uncaught: Content-Security-Policy:")]
    assert len(refused) == 1 and "blocked an inline script" in refused[0]
    assert [e for e in report["errors"] if e not in refused] == []
