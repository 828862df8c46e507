"""The floor for one process: a bare aiohttp handler that only parses JSON, base64-decodes, runs the
operation (ChaCha20-Poly1305 encrypt or decrypt, HMAC-SHA256) and encodes, in Vault's reply shape, single
items and batches. No token, no ACL, no key lookup, no metrics: what kms-service adds to a request is the
difference (``bench/transit_bench.py`` drives both alike).

    python bench/bare_server.py PORT
"""

from __future__ import annotations

import base64
import hmac
import json
import os
import sys
from collections.abc import Awaitable, Callable

from aiohttp import web
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

AEAD = ChaCha20Poly1305(os.urandom(32))
HMAC_KEY = os.urandom(32)


def _encrypt(plaintext: str) -> str:
    nonce = os.urandom(12)
    return "vault:v1:" + base64.b64encode(nonce + AEAD.encrypt(nonce, base64.b64decode(plaintext), None)).decode()


def _decrypt(ciphertext: str) -> str:
    body = base64.b64decode(ciphertext.split(":", 2)[2])
    return base64.b64encode(AEAD.decrypt(body[:12], body[12:], None)).decode()


def _hmac(data: str) -> str:
    return "vault:v1:" + base64.b64encode(hmac.digest(HMAC_KEY, base64.b64decode(data), "sha256")).decode()


# operation: (the item's input field, the function, the result's field)
OPERATIONS = {
    "encrypt": ("plaintext", _encrypt, "ciphertext"),
    "decrypt": ("ciphertext", _decrypt, "plaintext"),
    "hmac": ("input", _hmac, "hmac"),
}


def handler(operation: str) -> Callable[[web.Request], Awaitable[web.Response]]:
    field, run, result = OPERATIONS[operation]

    async def handle(request: web.Request) -> web.Response:
        body = json.loads(await request.read())
        if "batch_input" in body:
            data = {"batch_results": [{result: run(item[field])} for item in body["batch_input"]]}
        else:
            data = {result: run(body[field])}
        return web.Response(body=json.dumps({"data": data}).encode(), content_type="application/json")

    return handle


async def health(_request: web.Request) -> web.Response:
    return web.json_response({"initialized": True, "sealed": False})


def main() -> None:
    app = web.Application()
    app.router.add_post("/v1/transit/encrypt/{name}", handler("encrypt"))
    app.router.add_post("/v1/transit/decrypt/{name}", handler("decrypt"))
    app.router.add_post("/v1/transit/hmac/{name}/{algorithm}", handler("hmac"))
    app.router.add_get("/v1/sys/health", health)
    try:
        import uvloop
    except ImportError:
        uvloop = None
    loop = uvloop.new_event_loop() if uvloop else None  # as kms-service serve runs
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None, loop=loop)


if __name__ == "__main__":
    main()
