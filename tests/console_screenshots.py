"""Screenshots of every page of the console, at desktop (1280x800) and phone (390x844) size, into a directory
(``make console-screenshots`` writes docs/console/). A server on a fresh SQLite database with the tests'
services YAML and a database audit sink; a little traffic first, so the overview has something to show."""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

import requests
from console_browser import DESKTOP, OPERATOR_POLICY, PAGES, PHONE, launch, open_page, sign_in, start_server
from playwright.sync_api import sync_playwright

from kms_service.storage.database import create_engine
from kms_service.storage.migrate import upgrade


async def _migrate(url: str) -> None:
    engine = create_engine(url)
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()


def main(target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        url = f"sqlite:///{Path(work) / 'kms.db'}"
        asyncio.run(_migrate(url))
        server = start_server(Path(work), url)
        try:
            root = server.root_token()
            headers = {"X-Vault-Token": root}
            requests.post(
                f"{server.url}/v1/sys/policies/acl/console-operator", json={"policy": OPERATOR_POLICY}, headers=headers
            )
            for name, body in (("payments", {}), ("invoices-signing", {"type": "ed25519"})):
                requests.post(f"{server.url}/v1/transit/keys/{name}", json=body, headers=headers)
            for _ in range(3):
                requests.post(
                    f"{server.url}/v1/transit/encrypt/vault-enc", json={"plaintext": "aGVsbG8="}, headers=headers
                )
            requests.post(f"{server.url}/v1/transit/keys/vault-enc/rotate", headers=headers)
            server.endpoint_token("crypto")
            with sync_playwright() as playwright:
                browser = launch(playwright)
                for size, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
                    page = browser.new_page(viewport=viewport)
                    sign_in(page, server.url, root)
                    for name, route, heading in PAGES:
                        open_page(page, server.url, route, heading)
                        page.screenshot(path=str(target / f"{name}-{size}.png"))
                    page.close()
                browser.close()
        finally:
            server.stop()


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "../docs/console").resolve())
