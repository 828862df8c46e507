"""What the console's browser tests and its screenshots share: Debian's chromium driven by Playwright (never a
browser Playwright downloads), a server with a database audit sink, signing in, and the pages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conftest import TEST_CONFIG, ServerThread
from playwright.sync_api import Browser, Page, Playwright
from tools import find_tool

from kms_service.config import load_service_config

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}

# Every page of the console: (file name of its screenshot, route, its heading).
PAGES = (
    ("overview", "#/overview", "Overview"),
    ("keys", "#/keys", "Keys"),
    ("key", "#/keys/transit/vault-enc", "transit/vault-enc"),
    ("tokens", "#/tokens", "Tokens"),
    ("policies", "#/policies", "Policies"),
    ("policy", "#/policies/console-operator", "Policy console-operator"),
    ("endpoints", "#/endpoints", "Endpoints"),
    ("audit", "#/audit", "Audit"),
)

OPERATOR_POLICY = """# What the console's least-privilege operator may do.
path "transit/keys" {
  capabilities = ["list"]
}
path "transit/keys/*" {
  capabilities = ["read"]
}
"""


def launch(playwright: Playwright) -> Browser:
    find_tool("chromium", "chromium", CHROMIUM)
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def start_server(directory: Path, database_url: str, **settings: Any) -> ServerThread:
    """``settings``: any other ``Settings`` field."""
    data_dir = directory / "data"
    data_dir.mkdir(exist_ok=True)
    return ServerThread(database_url, data_dir, load_service_config(TEST_CONFIG), audit_db=True, **settings).start()


def sign_in(page: Page, url: str, token: str) -> None:
    page.goto(f"{url}/ui/")
    page.get_by_label("Token").fill(token)
    page.get_by_role("button", name="Sign in", exact=True).click()
    page.get_by_role("heading", name="Overview", exact=True).wait_for()
    wait_ready(page)


def open_page(page: Page, url: str, route: str, heading: str) -> None:
    if page.url.startswith(f"{url}/ui/") and page.url.endswith(route):
        page.reload()
    else:
        page.evaluate("() => { const main = document.getElementById('main'); if (main) delete main.dataset.ready; }")
        page.goto(f"{url}/ui/{route}")
    wait_ready(page)
    page.get_by_role("heading", name=heading, exact=True).wait_for()


def wait_ready(page: Page) -> None:
    """Until the page's reads have all answered (main.js marks it)."""
    page.locator("#main[data-ready='true']").wait_for()
