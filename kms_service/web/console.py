"""The operator's console at ``/ui/``: static files (an HTML page, ES modules, a style sheet) shipped as package
data in ``web/console/``, answered here before the router, so they never pass the token path.

The page talks to the service's own ``/v1/`` API with the operator's token, so every view is limited by the
token's ACL as any client is. What this module serves holds nothing secret and needs no token; what it may
not do is serve anything else: only the files listed when the app starts are answered (by exact name, so no
path ever reaches the file system), only to GET and HEAD.

Every answer carries a strict Content-Security-Policy (no inline script or style, nothing from another
origin, no framing), ``nosniff`` and ``Referrer-Policy: no-referrer``. The page's ``<script>``,
``<link rel="modulepreload">`` and ``<link rel="stylesheet">`` carry ``integrity`` attributes, sha384 of the
files computed when the files are loaded, so a browser runs only the bytes this process serves.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from importlib import resources

from kms_service.web.replies import Answer

PREFIX = "/ui"
ASSETS_PACKAGE = "kms_service.web"
ASSETS_DIR = "console"
INDEX = "index.html"

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".txt": "text/plain; charset=utf-8",
}

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)

SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}

# In the page: an attribute naming a file, followed by an empty integrity attribute, filled in here.
_NEEDS_INTEGRITY = re.compile(r'(?P<attr>src|href)="\./(?P<name>[A-Za-z0-9_.-]+)"(?P<between>[^>]*?)integrity=""')


def integrity(content: bytes) -> str:
    return "sha384-" + base64.b64encode(hashlib.sha384(content).digest()).decode()


@dataclass(frozen=True)
class Asset:
    content: bytes
    content_type: str


def load_assets() -> dict[str, Asset]:
    """Every file of the console by its name under /ui/; the page with its integrity attributes filled in."""
    folder = resources.files(ASSETS_PACKAGE).joinpath(ASSETS_DIR)
    assets: dict[str, Asset] = {}
    for entry in folder.iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1]
        if entry.is_file() and suffix in CONTENT_TYPES:
            assets[entry.name] = Asset(entry.read_bytes(), CONTENT_TYPES[suffix])
    page = assets[INDEX].content.decode()

    def fill(match: re.Match[str]) -> str:
        name = match["name"]
        if name not in assets:
            raise LookupError(f"the console's page names {name}, which is not shipped")
        return f'{match["attr"]}="./{name}"{match["between"]}integrity="{integrity(assets[name].content)}"'

    assets[INDEX] = Asset(_NEEDS_INTEGRITY.sub(fill, page).encode(), CONTENT_TYPES[".html"])
    return assets


class Console:
    """Answers requests under /ui."""

    def __init__(self) -> None:
        self.assets = load_assets()

    @staticmethod
    def serves(path: str) -> bool:
        return path == PREFIX or path.startswith(PREFIX + "/")

    def answer(self, method: str, path: str) -> Answer:
        headers = dict(SECURITY_HEADERS)
        if method not in ("GET", "HEAD"):
            headers["Allow"] = "GET, HEAD"
            return self._plain(405, "method not allowed", headers)
        if path == PREFIX:
            headers["Location"] = PREFIX + "/"
            return Answer(308, headers, b"")
        name = path[len(PREFIX) + 1 :] or INDEX
        asset = self.assets.get(name)
        if asset is None:
            return self._plain(404, "not found", headers)
        headers["Content-Type"] = asset.content_type
        # The page names its files' digests, so it is read again each time; the files may be cached.
        headers["Cache-Control"] = "no-cache" if name == INDEX else "public, max-age=300"
        return Answer(200, headers, b"" if method == "HEAD" else asset.content)

    @staticmethod
    def _plain(status: int, text: str, headers: dict[str, str]) -> Answer:
        headers["Content-Type"] = "text/plain; charset=utf-8"
        headers["Cache-Control"] = "no-store"
        return Answer(status, headers, text.encode())
