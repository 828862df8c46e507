"""The floor for one process: a bare aiohttp handler that only parses JSON, base64-decodes, encrypts with
ChaCha20-Poly1305 and encodes, in Vault's reply shape. No token, no ACL, no key lookup, no metrics: what
kms-service adds to a request is the difference (``bench/transit_bench.py`` drives both alike).

    python bench/bare_server.py PORT
"""

from __future__ import annotations

import base64
import json
import os
import sys

from aiohttp import web
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

AEAD = ChaCha20Poly1305(os.urandom(32))


def _encrypt(plaintext: str) -> str:
    nonce = os.urandom(12)
    return "vault:v1:" + base64.b64encode(nonce + AEAD.encrypt(nonce, base64.b64decode(plaintext), None)).decode()


async def encrypt(request: web.Request) -> web.Response:
    body = json.loads(await request.read())
    if "batch_input" in body:
        data = {"batch_results": [{"ciphertext": _encrypt(item["plaintext"])} for item in body["batch_input"]]}
    else:
        data = {"ciphertext": _encrypt(body["plaintext"])}
    return web.Response(body=json.dumps({"data": data}).encode(), content_type="application/json")


async def health(_request: web.Request) -> web.Response:
    return web.json_response({"initialized": True, "sealed": False})


def main() -> None:
    app = web.Application()
    app.router.add_post("/v1/transit/encrypt/{name}", encrypt)
    app.router.add_get("/v1/sys/health", health)
    try:
        import uvloop
    except ImportError:
        uvloop = None
    loop = uvloop.new_event_loop() if uvloop else None  # as kms-service serve runs
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None, loop=loop)


if __name__ == "__main__":
    main()
