"""The console in a real browser (Debian's chromium, driven by Playwright): signing in as root and as
least-privilege tokens, every page, every key tool checked against the HTTP API, a policy edited and the
capability it grants appearing, a rotation, signing out; the response headers, no request to another
origin, no error in the browser's console. One browser and one server for the module."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import requests
from console_browser import DESKTOP, OPERATOR_POLICY, PAGES, PHONE, launch, open_page, sign_in, start_server, wait_ready
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

pytestmark = [pytest.mark.sqlite_only, pytest.mark.slow]


@pytest.fixture(scope="module")
def console_server(tmp_path_factory, database_templates):
    directory = tmp_path_factory.mktemp("console")
    database_templates.sqlite(directory / "kms.db")
    server = start_server(directory, f"sqlite:///{directory / 'kms.db'}")
    api(server, server.root_token(), "POST", "sys/policies/acl/console-operator", policy=OPERATOR_POLICY)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = launch(playwright)
        yield browser
        browser.close()


@dataclass
class Watched:
    """What a page did that a test checks at the end: errors, requests, failed answers."""

    origin: str
    context: BrowserContext
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    failed: list[tuple[int, str]] = field(default_factory=list)
    expected: set[tuple[int, str]] = field(default_factory=set)  # failures a test causes on purpose

    def page(self, viewport: dict[str, int] = DESKTOP) -> Page:
        page = self.context.new_page()
        page.set_viewport_size(viewport)
        page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))
        page.on("request", lambda r: self.requests.append(r.url))
        page.on("response", lambda r: r.status >= 400 and self.failed.append((r.status, r.url)))
        return page

    def check(self) -> None:
        assert [u for u in self.requests if not u.startswith(self.origin + "/")] == [], "a request left the origin"
        # Vault answers an empty LIST with 404, and the browser logs each such answer as a failed load; every
        # other failed answer, and any script error, is a fault.
        unexpected = [
            (s, u)
            for s, u in self.failed
            if not (s == 404 and "list=true" in u) and (s, u.removeprefix(self.origin)) not in self.expected
        ]
        assert unexpected == []
        assert [e for e in self.errors if not e.startswith("Failed to load resource:")] == []


@pytest.fixture
def watched(browser: Browser, console_server) -> Iterator[Watched]:
    context = browser.new_context(viewport=DESKTOP)
    watched = Watched(console_server.url, context)
    yield watched
    context.close()
    watched.check()


def api(server, token: str, method: str, path: str, **body) -> dict:
    answer = requests.request(
        method, f"{server.url}/v1/{path}", headers={"X-Vault-Token": token}, json=body or None, timeout=10
    )
    assert answer.status_code in (200, 204), answer.text
    return answer.json() if answer.status_code == 200 else {}


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def tool(page: Page, title: str):
    return page.locator("form.tool").filter(has=page.get_by_role("heading", name=title, exact=True))


def test_root_walks_every_page(console_server, watched):
    root = console_server.root_token()
    page = watched.page()
    response = page.goto(f"{console_server.url}/ui/")
    headers = response.headers
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff" and headers["referrer-policy"] == "no-referrer"
    sign_in(page, console_server.url, root)
    for _, route, heading in PAGES:
        open_page(page, console_server.url, route, heading)
    open_page(page, console_server.url, "#/overview", "Overview")
    expect(page.get_by_text("200 · database available")).to_be_visible()
    expect(page.get_by_text("(this node)")).to_be_visible()
    expect(page.get_by_role("heading", name="Requests, last hour", exact=True)).to_be_visible()
    open_page(page, console_server.url, "#/keys", "Keys")
    expect(page.get_by_role("link", name="vault-enc", exact=True)).to_be_visible()
    page.get_by_label("Search", exact=True).fill("sign")
    expect(page.get_by_role("link", name="vault-enc", exact=True)).to_have_count(0)
    expect(page.get_by_role("link", name="vault-sign", exact=True)).to_be_visible()
    open_page(page, console_server.url, "#/endpoints", "Endpoints")
    expect(page.get_by_role("row").filter(has_text="encrypter")).to_contain_text("encrypt on vault-enc")
    open_page(page, console_server.url, "#/tokens", "Tokens")
    me = api(console_server, root, "GET", "auth/token/lookup-self")["data"]
    expect(page.get_by_role("row").filter(has_text=me["accessor"]).first).to_be_visible()
    assert root not in page.content()
    open_page(page, console_server.url, "#/audit", "Audit")
    expect(page.get_by_role("rowheader", name="db/", exact=True)).to_be_visible()
    page.get_by_role("button", name="Verify", exact=True).click()
    expect(page.get_by_text("Intact: every chain verified.")).to_be_visible()


def test_key_tools_agree_with_the_api(console_server, watched):
    root = console_server.root_token()
    api(console_server, root, "POST", "transit/keys/console-export", exportable=True)
    page = watched.page()
    sign_in(page, console_server.url, root)
    open_page(page, console_server.url, "#/keys/transit/vault-enc", "transit/vault-enc")

    encrypt = tool(page, "Encrypt")
    encrypt.get_by_label("Plaintext", exact=True).fill("hello console")
    encrypt.get_by_role("button", name="Encrypt", exact=True).click()
    ciphertext = encrypt.get_by_label("Ciphertext", exact=True).input_value()
    assert ciphertext.split(":")[1] == "v1"
    decrypted = api(console_server, root, "POST", "transit/decrypt/vault-enc", ciphertext=ciphertext)
    assert decrypted["data"]["plaintext"] == b64("hello console")

    decrypt = tool(page, "Decrypt")
    decrypt.get_by_label("Ciphertext", exact=True).fill(ciphertext)
    decrypt.get_by_role("button", name="Decrypt", exact=True).click()
    show = decrypt.get_by_role("button", name="Show plaintext", exact=True)
    show.wait_for()
    encrypt.get_by_label("Plaintext", exact=True).fill("")
    assert "hello console" not in page.content(), "a plaintext on the page before it was asked for"
    show.click()
    plaintext = decrypt.get_by_label("plaintext", exact=True)
    assert plaintext.input_value() == "hello console"

    rewrap = tool(page, "Rewrap")
    rewrap.get_by_label("Ciphertext to rewrap", exact=True).fill(ciphertext)
    rewrap.get_by_role("button", name="Rewrap", exact=True).click()
    rewrapped = rewrap.get_by_label("Rewrapped ciphertext", exact=True).input_value()
    again = api(console_server, root, "POST", "transit/decrypt/vault-enc", ciphertext=rewrapped)
    assert again["data"]["plaintext"] == b64("hello console")

    datakey = tool(page, "Data key")
    datakey.get_by_label("Kind", exact=True).select_option("plaintext")
    datakey.get_by_role("button", name="Data key", exact=True).click()
    wrapped = datakey.get_by_label("Data key ciphertext", exact=True).input_value()
    datakey.get_by_role("button", name="Show data key (base64)", exact=True).click()
    key_b64 = datakey.get_by_label("data key (base64)", exact=True).input_value()
    assert len(base64.b64decode(key_b64)) == 32
    opened = api(console_server, root, "POST", "transit/decrypt/vault-enc", ciphertext=wrapped)
    assert opened["data"]["plaintext"] == key_b64

    hmac = tool(page, "HMAC")
    hmac.get_by_label("Input", exact=True).fill("to be authenticated")
    hmac.get_by_role("button", name="HMAC", exact=True).click()
    expected = api(console_server, root, "POST", "transit/hmac/vault-enc", input=b64("to be authenticated"))
    expect(hmac.get_by_label("HMAC", exact=True)).to_have_value(expected["data"]["hmac"])

    # Leaving the page clears what the tools returned, even from elements still held.
    held = plaintext.element_handle()
    open_page(page, console_server.url, "#/keys/transit/vault-sign", "transit/vault-sign")
    assert held.evaluate("area => area.value") == ""

    sign = tool(page, "Sign")
    sign.get_by_label("Input", exact=True).fill("signed text")
    sign.get_by_role("button", name="Sign", exact=True).click()
    signature = sign.get_by_label("Signature", exact=True).input_value()
    checked = api(
        console_server, root, "POST", "transit/verify/vault-sign", input=b64("signed text"), signature=signature
    )
    assert checked["data"]["valid"] is True
    verify = tool(page, "Verify")
    verify.get_by_label("Input", exact=True).fill("signed text")
    verify.get_by_label("Signature", exact=True).fill(signature)
    verify.get_by_role("button", name="Verify", exact=True).click()
    expect(verify.locator("[data-valid='true']")).to_have_text("Valid signature")
    verify.get_by_label("Input", exact=True).fill("other text")
    verify.get_by_role("button", name="Verify", exact=True).click()
    expect(verify.locator("[data-valid='false']")).to_have_text("Not valid")

    open_page(page, console_server.url, "#/keys/transit/console-export", "transit/console-export")
    export = tool(page, "Export")
    export.get_by_label("What", exact=True).select_option("encryption-key")
    export.get_by_role("button", name="Export", exact=True).click()
    exported = api(console_server, root, "GET", "transit/export/encryption-key/console-export")["data"]["keys"]["1"]
    export.get_by_role("button", name="Show encryption-key", exact=True).wait_for()
    assert exported not in page.content()
    export.get_by_role("button", name="Show encryption-key", exact=True).click()
    assert export.get_by_label("encryption-key", exact=True).input_value() == exported


def test_rotate_shows_the_new_version(console_server, watched):
    root = console_server.root_token()
    api(console_server, root, "POST", "transit/keys/console-rotate")
    page = watched.page()
    sign_in(page, console_server.url, root)
    open_page(page, console_server.url, "#/keys/transit/console-rotate", "transit/console-rotate")
    expect(page.get_by_role("rowheader", name="1 (latest)", exact=True)).to_be_visible()
    page.get_by_role("button", name="Rotate", exact=True).click()
    expect(page.get_by_role("rowheader", name="2 (latest)", exact=True)).to_be_visible()
    assert api(console_server, root, "GET", "transit/keys/console-rotate")["data"]["latest_version"] == 2


def test_policy_edit_changes_what_a_limited_token_may_do(console_server, watched):
    root = console_server.root_token()
    api(console_server, root, "POST", "sys/policies/acl/console-operator", policy=OPERATOR_POLICY)
    api(console_server, root, "POST", "transit/keys/console-limited")
    limited = api(console_server, root, "POST", "auth/token/create", policies=["console-operator"])["auth"]
    operator = watched.page()
    sign_in(operator, console_server.url, limited["client_token"])
    expect(operator.get_by_text("Hidden: this token's policies do not grant 'read' on sys/metrics.")).to_be_visible()
    open_page(operator, console_server.url, "#/keys/transit/console-limited", "transit/console-limited")
    rotate_path = "transit/keys/console-limited/rotate"
    expect(operator.get_by_text(f"do not grant 'update' on {rotate_path}.")).to_be_visible()
    expect(operator.get_by_role("button", name="Rotate", exact=True)).to_have_count(0)

    admin = watched.page()
    sign_in(admin, console_server.url, root)
    open_page(admin, console_server.url, "#/policies/console-operator", "Policy console-operator")
    document = admin.get_by_label("Policy document (HCL or JSON)", exact=True)
    document.fill('path "transit/keys/*" {\n  capabilities = ["read", "fly"]\n}\n')
    admin.get_by_role("button", name="Save", exact=True).click()
    watched.expected.add((400, "/v1/sys/policies/acl/console-operator"))
    problem = admin.get_by_role("alert")
    expect(problem).to_contain_text("invalid capability")
    expect(document).to_have_attribute("aria-invalid", "true")
    document.fill(OPERATOR_POLICY + 'path "transit/keys/+/rotate" {\n  capabilities = ["update"]\n}\n')
    admin.get_by_role("button", name="Save", exact=True).click()
    expect(admin.get_by_role("status").filter(has_text="Saved.")).to_be_visible()

    open_page(operator, console_server.url, "#/keys/transit/console-limited", "transit/console-limited")
    operator.get_by_role("button", name="Rotate", exact=True).click()
    expect(operator.get_by_role("rowheader", name="2 (latest)", exact=True)).to_be_visible()
    expect(operator.get_by_text("do not grant 'update' on transit/keys/console-limited/config.")).to_be_visible()


@pytest.fixture(scope="module")
def small_budget_server(tmp_path_factory, database_templates):
    """A server whose nonce budget warns from 3 encryptions of a version (before ``browser``: its database
    is made without the browser's event loop running)."""
    directory = tmp_path_factory.mktemp("budget")
    database_templates.sqlite(directory / "kms.db")
    server = start_server(directory, f"sqlite:///{directory / 'kms.db'}", nonce_warning_at=3, nonce_rotation_at=10)
    yield server
    server.stop()


def test_the_nonce_budget_warning_comes_from_the_service(small_budget_server, browser):
    """The console warns from the threshold the key's read gives, the service's own setting."""
    server = small_budget_server
    root = server.root_token()
    for _ in range(3):
        api(server, root, "POST", "transit/encrypt/vault-enc", plaintext=b64("spend a nonce"))
    context = browser.new_context(viewport=DESKTOP)
    watched = Watched(server.url, context)
    page = watched.page()
    sign_in(page, server.url, root)
    warning = "transit/vault-enc: version 1 is near its nonce budget (3 encryptions): rotate it"
    expect(page.get_by_role("link", name=warning, exact=True)).to_be_visible()
    expect(page.get_by_text("near its nonce budget")).to_have_count(1)  # not the signing key
    open_page(page, server.url, "#/keys/transit/vault-enc", "transit/vault-enc")
    budget = "warned from 3 encryptions of a version, rotated at 10"
    expect(page.get_by_role("definition").filter(has_text=budget)).to_be_visible()
    context.close()
    watched.check()


TOKEN_AUDITOR_POLICY = """# Sees every token by accessor, may revoke none.
path "auth/token/accessors" {
  capabilities = ["list", "sudo"]
}
path "auth/token/lookup-accessor" {
  capabilities = ["update"]
}
"""


def test_revoke_a_token_by_accessor_after_confirming(console_server, watched):
    root = console_server.root_token()
    api(console_server, root, "POST", "sys/policies/acl/console-token-auditor", policy=TOKEN_AUDITOR_POLICY)
    victim = api(console_server, root, "POST", "auth/token/create", policies=["default"], display_name="victim")
    accessor, victim_token = victim["auth"]["accessor"], victim["auth"]["client_token"]
    auditor = api(console_server, root, "POST", "auth/token/create", policies=["console-token-auditor"])

    page = watched.page()
    sign_in(page, console_server.url, auditor["auth"]["client_token"])
    open_page(page, console_server.url, "#/tokens", "Tokens")
    expect(page.get_by_role("row").filter(has_text=accessor)).to_be_visible()
    expect(page.get_by_text("do not grant 'update' on auth/token/revoke-accessor.")).to_be_visible()
    expect(page.get_by_role("button", name="Revoke", exact=False)).to_have_count(0)

    admin = watched.page()
    sign_in(admin, console_server.url, root)
    open_page(admin, console_server.url, "#/tokens", "Tokens")
    admin.get_by_role("button", name=f"Revoke {accessor}", exact=True).click()
    confirm = admin.get_by_role("group", name="Confirm revoking")
    expect(confirm).to_contain_text(f"Revoke the token with accessor {accessor} (token-victim; default)?")
    expect(confirm.get_by_role("button", name=f"Yes, revoke {accessor}", exact=True)).to_be_focused()
    confirm.get_by_role("button", name="Cancel", exact=True).click()
    expect(confirm).to_have_count(0)
    expect(admin.get_by_role("button", name=f"Revoke {accessor}", exact=True)).to_be_focused()
    assert api(console_server, victim_token, "GET", "auth/token/lookup-self")["data"]["accessor"] == accessor

    admin.get_by_role("button", name=f"Revoke {accessor}", exact=True).click()
    admin.evaluate("() => { delete document.getElementById('main').dataset.ready; }")
    confirm.get_by_role("button", name=f"Yes, revoke {accessor}", exact=True).click()
    wait_ready(admin)
    expect(admin.get_by_role("row").filter(has_text=accessor)).to_have_count(0)
    gone = requests.get(
        f"{console_server.url}/v1/auth/token/lookup-self", headers={"X-Vault-Token": victim_token}, timeout=10
    )
    assert gone.status_code == 403


def test_revoking_the_signed_in_token_signs_out(console_server, watched):
    root = console_server.root_token()
    policy = TOKEN_AUDITOR_POLICY + 'path "auth/token/revoke-accessor" {\n  capabilities = ["update"]\n}\n'
    api(console_server, root, "POST", "sys/policies/acl/console-token-revoker", policy=policy)
    me = api(console_server, root, "POST", "auth/token/create", policies=["console-token-revoker"])["auth"]
    page = watched.page()
    sign_in(page, console_server.url, me["client_token"])
    open_page(page, console_server.url, "#/tokens", "Tokens")
    page.get_by_role("button", name=f"Revoke {me['accessor']}", exact=True).click()
    confirm = page.get_by_role("group", name="Confirm revoking")
    expect(confirm).to_contain_text("This is the token you are signed in with: the console signs out.")
    confirm.get_by_role("button", name=f"Yes, revoke {me['accessor']}", exact=True).click()
    watched.expected.add((403, "/v1/auth/token/lookup-self"))  # the page asks, learns the token is gone
    expect(page.get_by_role("alert")).to_have_text("The token is no longer valid: sign in again.")
    expect(page.get_by_role("heading", name="Sign in", exact=True)).to_be_visible()
    assert page.evaluate("() => sessionStorage.length") == 0


def test_endpoint_token_sees_only_its_grant(console_server, watched):
    token = console_server.endpoint_token("encrypter")
    page = watched.page()
    sign_in(page, console_server.url, token)
    expect(page.get_by_text("do not grant 'read' on sys/mounts.")).to_be_visible()
    expect(page.get_by_label("Namespace", exact=True)).to_be_disabled()
    open_page(page, console_server.url, "#/keys", "Keys")
    expect(page.get_by_text("do not grant 'list' on transit/keys.")).to_be_visible()
    page.get_by_label("Key name", exact=True).fill("vault-enc")
    page.get_by_role("button", name="Open", exact=True).click()
    wait_ready(page)
    expect(page.get_by_text("do not grant 'read' on transit/keys/vault-enc.")).to_be_visible()
    expect(page.get_by_text("do not grant 'update' on transit/decrypt/vault-enc.")).to_be_visible()
    encrypt = tool(page, "Encrypt")
    encrypt.get_by_label("Plaintext", exact=True).fill("from the endpoint")
    encrypt.get_by_role("button", name="Encrypt", exact=True).click()
    ciphertext = encrypt.get_by_label("Ciphertext", exact=True).input_value()
    root = console_server.root_token()
    decrypted = api(console_server, root, "POST", "transit/decrypt/vault-enc", ciphertext=ciphertext)
    assert decrypted["data"]["plaintext"] == b64("from the endpoint")
    for _, route, heading in PAGES[3:]:
        open_page(page, console_server.url, route, heading)


def test_sign_out_leaves_nothing_of_the_token(console_server, watched):
    root = console_server.root_token()
    page = watched.page()
    sign_in(page, console_server.url, root)
    assert page.evaluate("() => Object.values(sessionStorage)").count(root) == 1
    assert root not in page.url
    page.get_by_role("button", name="Sign out", exact=True).click()
    page.get_by_role("heading", name="Sign in", exact=True).wait_for()
    expect(page.get_by_role("button", name="Sign out", exact=True)).to_be_hidden()
    expect(page.get_by_role("navigation")).to_be_hidden()
    stored = page.evaluate("() => [sessionStorage.length, localStorage.length, document.cookie]")
    assert stored == [0, 0, ""]
    assert watched.context.cookies() == []
    assert root not in page.content() and root not in page.url
    page.reload()
    page.get_by_role("heading", name="Sign in", exact=True).wait_for()


def test_keyboard_and_phone_size(console_server, watched):
    root = console_server.root_token()
    page = watched.page(PHONE)
    page.goto(f"{console_server.url}/ui/")
    page.get_by_label("Token", exact=True).wait_for()
    expect(page.get_by_label("Token", exact=True)).to_be_focused()
    page.keyboard.type(root)
    page.keyboard.press("Enter")
    wait_ready(page)
    for _ in range(20):
        if page.evaluate("() => document.activeElement.textContent") == "Keys":
            break
        page.keyboard.press("Tab")
    page.keyboard.press("Enter")
    page.get_by_role("heading", name="Keys", exact=True).wait_for()
    for _, route, heading in PAGES:
        open_page(page, console_server.url, route, heading)
        width = page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= PHONE["width"], f"{route} scrolls sideways at phone size ({width} px)"
