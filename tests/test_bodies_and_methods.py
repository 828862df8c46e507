"""Request bodies and methods as Vault's clients send them: no body, ``null`` and ``{}`` are no fields; form
bodies are forms (string values), JSON under a form type is JSON; the ``LIST`` method and ``?list=`` work
wherever Vault takes them. Clients: hvac with its defaults, requests, curl and OpenBao's ``bao`` CLI."""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import json
import logging
import re
import socket
import subprocess
from datetime import timedelta
from urllib.parse import urlencode

import hvac
import pytest
import requests
from baocli import bao, bao_json
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

# The HTTP surface: the database plays no part here (tests of storage run on both).
pytestmark = pytest.mark.sqlite_only

SECRET = b"the quick brown fox\n"
PLAINTEXT = base64.b64encode(SECRET).decode()
FORM = "application/x-www-form-urlencoded"


@pytest.fixture
def root(server):
    return server.call(server.kms.tokens.create(["root"], timedelta(hours=1)))[0]


def _post(server, token, path, raw=None, content_type=None, **kwargs):
    headers = {"X-Vault-Token": token}
    if content_type is not None:
        headers["Content-Type"] = content_type
    return requests.post(f"{server.url}/v1/{path}", data=raw, headers=headers, timeout=30, **kwargs)


# -- bodies -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "content_type"),
    [
        (b"", None),
        (b"null", None),  # what `bao write -f` sends (no Content-Type)
        (b"null\n", "application/json"),
        (b"{}", None),
        (b" {} ", "application/json"),
        (b"", FORM),  # curl -X POST --data ''
        (b"{}", FORM),  # curl --data '{}'
    ],
    ids=["empty", "null", "json-null", "object", "json-object", "form-empty", "form-object"],
)
def test_rotate_takes_no_body_null_or_an_empty_object(server, root, raw, content_type):
    before = server.client(root).secrets.transit.read_key("vault-enc")["data"]["latest_version"]
    response = _post(server, root, "transit/keys/vault-enc/rotate", raw, content_type)
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "application/json"
    assert response.json()["data"]["latest_version"] == before + 1
    assert response.json()["warnings"] is None


def test_null_under_a_form_type_is_a_form_key_as_in_vault(server, root):
    """curl --data 'null' sends a form type; Vault reads the body as a form whose one key is 'null'."""
    response = _post(server, root, "transit/keys/vault-enc/rotate", b"null", FORM)
    assert response.status_code == 200
    assert response.json()["warnings"] == ["Endpoint ignored these unrecognized parameters: [null]"]


def test_json_that_is_not_an_object_is_still_refused(server, root):
    for raw, content_type in ((b'"x"', "application/json"), (b"5", None), (b"[]", FORM), (b" [1]", FORM)):
        response = _post(server, root, "transit/keys/vault-enc/rotate", raw, content_type)
        assert response.status_code == 400, raw
        assert response.json() == {"errors": ["failed to decode JSON input: expected a JSON object"]}


def test_form_encoded_encrypt_and_decrypt(server, root):
    """requests' data={...} is a real form (application/x-www-form-urlencoded): string values, as Vault reads."""
    encrypted = _post(server, root, "transit/encrypt/vault-enc", {"plaintext": PLAINTEXT, "key_version": "1"})
    assert encrypted.request.headers["Content-Type"] == FORM
    assert encrypted.status_code == 200, encrypted.text
    assert encrypted.json()["warnings"] is None
    ciphertext = encrypted.json()["data"]["ciphertext"]
    assert ciphertext.startswith("vault-kms:v1:")
    decrypted = _post(server, root, "transit/decrypt/vault-enc", {"ciphertext": ciphertext})
    assert decrypted.status_code == 200, decrypted.text
    assert base64.b64decode(decrypted.json()["data"]["plaintext"]) == SECRET
    # associated_data too, and '+' in base64 survives percent-encoding
    aad = base64.b64encode(b"\xfb\xef\xbe").decode()
    assert "+" in aad
    encrypted = _post(server, root, "transit/encrypt/vault-enc", {"plaintext": PLAINTEXT, "associated_data": aad})
    ciphertext = encrypted.json()["data"]["ciphertext"]
    decrypted = _post(server, root, "transit/decrypt/vault-enc", {"ciphertext": ciphertext, "associated_data": aad})
    assert base64.b64decode(decrypted.json()["data"]["plaintext"]) == SECRET
    # an unescaped '+' is a space, so that base64 is refused (as in Vault)
    refused = _post(server, root, "transit/encrypt/vault-enc", "plaintext=aGk+", FORM)
    assert refused.status_code == 400 and "illegal base64" in refused.json()["errors"][0]


def test_form_values_convert_like_json_strings_and_unknown_keys_warn(server, root):
    response = _post(server, root, "transit/keys/vault-sign/config", {"deletion_allowed": "true", "foo": ""})
    assert response.status_code == 200, response.text
    assert response.json()["data"]["deletion_allowed"] is True
    assert response.json()["warnings"] == ["Endpoint ignored these unrecognized parameters: [foo]"]
    jws = {"input": PLAINTEXT, "marshaling_algorithm": "jws"}
    signed = _post(server, root, "transit/sign/vault-sign/sha2-256", jws)
    assert signed.status_code == 200, signed.text
    verified = _post(
        server,
        root,
        "transit/verify/vault-sign/sha2-256",
        {**jws, "signature": signed.json()["data"]["signature"]},
    )
    assert verified.json()["data"]["valid"] is True
    # A key without '=' is a key with an empty value; an empty pair is nothing.
    response = _post(server, root, "transit/encrypt/vault-enc", f"plaintext={PLAINTEXT}&&flag", FORM)
    assert response.status_code == 200
    assert response.json()["warnings"] == ["Endpoint ignored these unrecognized parameters: [flag]"]


def test_a_field_the_path_gives_is_replaced_with_a_warning(server, root):
    """A body field named like a path parameter (``name`` in encrypt/:name) is overridden by the path; the
    warnings are OpenBao's words (2.x, checked against ``bao server -dev``), ignored fields first."""
    replaced = (
        "Endpoint replaced the value of these parameters with the values captured from the endpoint's path: [name]"
    )
    cases = [
        ({"plaintext": PLAINTEXT}, None),
        ({"plaintext": PLAINTEXT, "name": "other"}, [replaced]),
        (
            {"plaintext": PLAINTEXT, "name": "other", "zz": 1},
            ["Endpoint ignored these unrecognized parameters: [zz]", replaced],
        ),
    ]
    for body, warnings in cases:
        response = _post(server, root, "transit/encrypt/vault-enc", body)
        assert response.status_code == 200, response.text
        assert response.json()["warnings"] == warnings, body
        decrypted = _post(
            server, root, "transit/decrypt/vault-enc", {"ciphertext": response.json()["data"]["ciphertext"]}
        )
        assert decrypted.status_code == 200  # the path's key encrypted it, not "other"


def test_json_under_a_form_type_stays_json(server, root):
    """curl --data '{...}' sends JSON with a form type: still JSON (Vault looks for a leading { or [)."""
    body = "\n  " + json.dumps({"plaintext": PLAINTEXT, "key_version": 1})
    response = _post(server, root, "transit/encrypt/vault-enc", body, FORM)
    assert response.status_code == 200, response.text
    # and strict: a duplicate key is refused with the JSON text
    response = _post(server, root, "transit/encrypt/vault-enc", '{"plaintext": "QQ==", "plaintext": "QQ=="}', FORM)
    assert response.status_code == 400
    assert response.json() == {"errors": ["failed to decode JSON input: duplicate key in object"]}


def test_form_limits_are_gos(server, root):
    path = "transit/keys/vault-sign/config"
    at_limit = "&".join(f"k{i}=" for i in range(10_000))
    assert _post(server, root, path, at_limit, FORM).status_code == 200
    over = _post(server, root, path, at_limit + "&", FORM)
    assert over.status_code == 400 and over.json() == {"errors": ["error parsing form data"]}
    # Past Go's 10 MiB: on a path whose bodies may be that large (--max-batch-request-size); elsewhere
    # --max-request-size refuses it first (413, tests/test_limits.py).
    big = _post(server, root, "transit/encrypt/vault-enc", "x=" + "A" * (10 * 1024 * 1024), FORM)
    assert big.status_code == 400 and big.json() == {"errors": ["error parsing form data"]}


def test_generated_form_bodies_never_get_a_5xx(server, root):
    fields = st.sampled_from(["plaintext", "ciphertext", "key_version", "context", "batch_input", "nonce", ""])
    values = st.text(max_size=30) | st.sampled_from(["", "QQ==", "vault-kms:v1:AAAA", "1", "-1", "true", "[]"])
    pairs = st.lists(st.tuples(fields | st.text(max_size=8), values), max_size=6)

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(
        body=pairs.map(urlencode).map(str.encode) | st.binary(max_size=100),
        path=st.sampled_from(["transit/encrypt/vault-enc", "transit/decrypt/vault-enc", "transit/sign/vault-sign"]),
    )
    def check(body, path):
        response = _post(server, root, path, body, FORM)
        assert response.status_code < 500, (body, response.text)
        assert response.headers["Content-Type"] == "application/json"

    check()


# -- LIST -----------------------------------------------------------------------------------------------


def test_hvac_default_list_keys_sends_list(server, root):
    client = server.client(root)
    assert client.adapter.strict_http is False  # hvac's default: the LIST method
    assert client.secrets.transit.list_keys()["data"]["keys"] == ["vault-enc", "vault-sign"]
    # A token without `list` on transit/keys is refused, as any other request.
    with pytest.raises(hvac.exceptions.Forbidden):
        server.client(server.endpoint_token("admin_enc")).secrets.transit.list_keys()


def test_curl_list(server, root):
    for url in (f"{server.url}/v1/transit/keys", f"{server.url}/v1/transit/keys/"):
        out = subprocess.run(
            ["curl", "-sS", "-X", "LIST", "-H", f"X-Vault-Token: {root}", "-w", "\n%{http_code}", url],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout
        body, status = out.rsplit("\n", 1)
        assert status == "200", out
        assert json.loads(body)["data"]["keys"] == ["vault-enc", "vault-sign"]


@pytest.mark.parametrize(
    ("value", "status"),
    [
        *((v, 200) for v in ("1", "t", "T", "TRUE", "true", "True")),
        *((v, 405) for v in ("0", "f", "F", "FALSE", "false", "False", "")),  # a plain GET: keys has no read
        *((v, 400) for v in ("yes", "tRUE", "2", " true")),
    ],
)
def test_list_query_takes_gos_parse_bool(server, root, value, status):
    response = requests.get(
        f"{server.url}/v1/transit/keys", params={"list": value}, headers={"X-Vault-Token": root}, timeout=10
    )
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/json"
    if status == 200:
        assert response.json()["data"]["keys"] == ["vault-enc", "vault-sign"]
    elif status == 400:
        assert response.json() == {"errors": []}


def test_list_query_rules(server, root):
    url = f"{server.url}/v1/transit/keys"
    # A bad value is refused before authentication, as in Vault.
    assert requests.get(url, params={"list": "yes"}, timeout=10).json() == {"errors": []}
    headers = {"X-Vault-Token": root}
    # The first value counts (Go's Query().Get).
    assert requests.get(f"{url}?list=true&list=false", headers=headers, timeout=10).status_code == 200
    assert requests.get(f"{url}?list=false&list=true", headers=headers, timeout=10).status_code == 405
    # Only a GET lists: on another method the query means nothing.
    assert requests.post(f"{url}?list=true", headers=headers, timeout=10).status_code == 405
    # A key read with ?list=false is a read.
    read = requests.get(f"{url}/vault-enc", params={"list": "false"}, headers=headers, timeout=10)
    assert read.status_code == 200


def test_list_goes_through_auth_acl_then_404_or_405(server, root):
    def list_(path, token=root):
        headers = {"X-Vault-Token": token} if token else {}
        return requests.request("LIST", f"{server.url}/v1/{path}", headers=headers, timeout=10)

    assert list_("transit/keys", token=None).status_code == 403
    assert list_("transit/keys", token="kms." + "A" * 43).status_code == 403
    assert list_("transit/keys", token=server.endpoint_token("crypto")).status_code == 403  # no `list` grant
    assert list_("transit/keys/", token=server.endpoint_token("crypto")).status_code == 403
    # Vault lists "<path>/": only a path that lists (or whose optional last parameter takes the slash)
    # matches it, so listing another known path is an unknown path.
    for path in ("transit/keys/vault-enc", "transit/keys/vault-enc/rotate", "transit/sign/vault-sign", "nothing"):
        response = list_(path)
        assert response.status_code == 404, path
        assert response.json() == {"errors": ["unsupported path"]}
    response = list_("transit/sign/vault-sign/sha2-256")
    assert response.status_code == 405 and response.json() == {"errors": ["unsupported operation"]}
    # One trailing slash, not two.
    assert list_("transit/keys//").status_code == 400


def test_list_on_a_kept_alive_connection_and_the_requests_after_it(server, root):
    """LISTs between other requests on one kept-alive connection, with bodies (also chunked): all answered on
    that one connection."""
    session = requests.Session()
    session.headers["X-Vault-Token"] = root
    url = f"{server.url}/v1/transit"

    def encrypt(**kwargs):
        response = session.post(f"{url}/encrypt/vault-enc", **kwargs)
        assert response.status_code == 200, response.text
        return response.json()["data"]["ciphertext"]

    encrypt(json={"plaintext": PLAINTEXT})
    [connection] = server._runner.server.connections
    for _ in range(3):
        assert session.request("LIST", f"{url}/keys").json()["data"]["keys"] == ["vault-enc", "vault-sign"]
        ciphertext = encrypt(json={"plaintext": PLAINTEXT})
        encrypt(data=iter([b'{"plaintext": ', json.dumps(PLAINTEXT).encode(), b"}"]))  # chunked
        decrypted = session.post(f"{url}/decrypt/vault-enc", data={"ciphertext": ciphertext}).json()
        assert base64.b64decode(decrypted["data"]["plaintext"]) == SECRET
        assert session.get(f"{url}/keys/vault-enc").status_code == 200
    assert server._runner.server.connections == [connection]


def test_list_requests_in_one_connection_written_raw(server, root):
    """Two LISTs and a POST written by hand on one socket, each in its own write: all answered in order."""
    host, port = server.url.removeprefix("http://").split(":")
    body = json.dumps({"plaintext": PLAINTEXT}).encode()
    requests_ = [
        f"LIST /v1/transit/keys HTTP/1.1\r\nHost: x\r\nX-Vault-Token: {root}\r\n\r\n".encode(),
        f"POST /v1/transit/encrypt/vault-enc HTTP/1.1\r\nHost: x\r\nX-Vault-Token: {root}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body,
        f"LIST /v1/transit/keys/ HTTP/1.1\r\nHost: x\r\nX-Vault-Token: {root}\r\nConnection: close\r\n\r\n".encode(),
    ]
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        received = b""
        for answered, request in enumerate(requests_, start=1):
            sock.sendall(request)
            while len(re.findall(rb"HTTP/1\.1 ", received)) < answered or not received.endswith(b"}\n"):
                chunk = sock.recv(65536)
                assert chunk, received
                received += chunk
    statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", received)
    assert statuses == [b"200", b"200", b"200"], received


@pytest.mark.parametrize(("expect", "statuses"), [("100-continue", [b"100", b"200"]), ("something-else", [b"417"])])
def test_an_expect_header_gets_an_interim_100_or_417(server, root, expect, statuses):
    """Expect: 100-continue gets an interim 100 before the body is sent (curl waits for it on larger bodies);
    any other expectation is refused with 417 before the request is answered."""
    host, port = server.url.removeprefix("http://").split(":")
    body = json.dumps({"plaintext": PLAINTEXT}).encode()
    head = (
        f"POST /v1/transit/encrypt/vault-enc HTTP/1.1\r\nHost: x\r\nX-Vault-Token: {root}\r\nExpect: {expect}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
    )
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head)
        received = sock.recv(65536)  # the interim answer, or the refusal, comes before the body is sent
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(body)
        while chunk := sock.recv(65536):
            received += chunk
    assert re.findall(rb"HTTP/1\.1 (\d{3}) ", received) == statuses, received


def test_a_malformed_request_is_logged_without_its_bytes(server, caplog):
    """aiohttp refuses a request it cannot parse (400) and logs it; the line keeps no byte of the request."""
    caplog.set_level(logging.DEBUG, logger="aiohttp.server")
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/sys/health HTTP/1.1\r\nHost: x\r\nX-Vault-Token: hvs.secret\r\nContent-Length: no\r\n\r\n"
        )
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    assert received.split(b"\r\n", 1)[0].endswith(b" 400 Bad Request"), received
    [line] = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert line.getMessage().startswith("rejected a malformed HTTP request") and line.exc_info is None
    assert "hvs.secret" not in line.getMessage()


def test_a_body_that_cannot_be_read_closes_the_connection_and_says_so(server, root):
    """A chunked body whose chunk sizes are not hexadecimal cannot be read, and aiohttp closes the connection
    after the answer: the answer says Connection: close, so a client keeping connections alive does not
    send its next request into the closed socket. (The body is sent once the service reads it, after its
    interim 100: sent with the headers, aiohttp refuses it itself.)"""
    host, port = server.url.removeprefix("http://").split(":")
    head = (
        f"POST /v1/transit/encrypt/vault-enc HTTP/1.1\r\nHost: x\r\nX-Vault-Token: {root}\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n"
    )
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head.encode())
        received = sock.recv(65536)
        assert received.startswith(b"HTTP/1.1 100 Continue\r\n\r\n"), received
        sock.sendall(b'4\r\n{"pl\r\nzz\r\naintext": 1}\r\n0\r\n\r\n')
        received = b""
        while chunk := sock.recv(65536):  # the server closes the connection after its answer
            received += chunk
    status, *headers = received.split(b"\r\n\r\n", 1)[0].split(b"\r\n")
    assert status.endswith(b" 400 Bad Request"), received
    assert b"connection: close" in [h.lower() for h in headers], received
    assert json.loads(received.split(b"\r\n\r\n", 1)[1]) == {"errors": ["request body incomplete"]}


def test_a_compressed_body_is_read_as_sent_as_vault_reads_it(server, root):
    """Content-Encoding is not undone (Vault's server does not undo it either): a gzip body is bytes that are
    not JSON, a 400, however large it would inflate to; the connection stays usable."""
    url = f"{server.url}/v1/transit/encrypt/vault-enc"
    bomb = gzip.compress(b'{"plaintext": "' + b"A" * (64 * 1024 * 1024) + b'"}')
    with requests.Session() as session:
        headers = {"X-Vault-Token": root, "Content-Type": "application/json", "Content-Encoding": "gzip"}
        for body in (gzip.compress(json.dumps({"plaintext": PLAINTEXT}).encode()), bomb):
            refused = session.post(url, data=body, headers=headers, timeout=30)
            assert refused.status_code == 400 and "failed to decode JSON input" in refused.json()["errors"][0]
        plain = {"X-Vault-Token": root, "Content-Encoding": "gzip"}
        made = session.post(url, json={"plaintext": PLAINTEXT}, headers=plain, timeout=10)  # says gzip, is not
        assert made.status_code == 200 and ":v1:" in made.json()["data"]["ciphertext"], made.text


def test_list_pipelined_behind_other_requests_in_one_write(server, root):
    """A LIST behind a POST and before a GET, all in one write: answered in order."""
    host, port = server.url.removeprefix("http://").split(":")
    body = json.dumps({"plaintext": PLAINTEXT}).encode()
    pipelined = (
        f"POST /v1/transit/encrypt/vault-enc HTTP/1.1\r\nHost: x\r\nX-Vault-Token: {root}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
        + f"LIST /v1/transit/keys HTTP/1.1\r\nHost: x\r\nX-Vault-Token: {root}\r\n\r\n".encode()
        + f"GET /v1/transit/keys/nothing-here HTTP/1.1\r\nHost: x\r\nX-Vault-Token: {root}\r\n"
        "Connection: close\r\n\r\n".encode()
    )
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(pipelined)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    assert re.findall(rb"HTTP/1\.1 (\d{3}) ", received) == [b"200", b"200", b"404"], received
    assert b'"ciphertext":"vault-kms:v1:' in received, received
    assert b'"keys":["vault-enc","vault-sign"]' in received, received


# -- the bao CLI ----------------------------------------------------------------------------------------


def test_bao_cli_transit_commands(server, root):
    """The commands of Vault's transit docs that touch what exists here (key creation is not one of them)."""
    rotated = bao_json(server, root, "write", "-f", "transit/keys/vault-enc/rotate")
    assert rotated["data"]["latest_version"] == 2
    listed = bao(server, root, "list", "transit/keys").stdout.split()
    assert listed[-2:] == ["vault-enc", "vault-sign"]
    assert bao_json(server, root, "list", "transit/keys") == ["vault-enc", "vault-sign"]
    read = bao_json(server, root, "read", "transit/keys/vault-enc")
    assert read["data"]["name"] == "vault-enc" and read["data"]["latest_version"] == 2

    plaintext = base64.b64encode(b"my secret data\n").decode()  # $(base64 <<< "my secret data")
    ciphertext = bao_json(server, root, "write", "transit/encrypt/vault-enc", f"plaintext={plaintext}")["data"][
        "ciphertext"
    ]
    assert ciphertext.startswith("vault-kms:v2:")
    decrypted = bao_json(server, root, "write", "transit/decrypt/vault-enc", f"ciphertext={ciphertext}")
    assert decrypted["data"]["plaintext"] == plaintext
    rewrapped = bao_json(server, root, "write", "transit/rewrap/vault-enc", f"ciphertext={ciphertext}")
    assert rewrapped["data"]["key_version"] == 2

    signature = bao_json(server, root, "write", "transit/sign/vault-sign", f"input={plaintext}")["data"]["signature"]
    verified = bao_json(
        server, root, "write", "transit/verify/vault-sign", f"input={plaintext}", f"signature={signature}"
    )
    assert verified["data"]["valid"] is True
    signature = bao_json(server, root, "write", "transit/sign/vault-sign/sha2-512", f"input={plaintext}")["data"][
        "signature"
    ]
    verified = bao_json(
        server, root, "write", "transit/verify/vault-sign/sha2-512", f"input={plaintext}", f"signature={signature}"
    )
    assert verified["data"]["valid"] is True
    configured = bao_json(server, root, "write", "transit/keys/vault-enc/config", "min_decryption_version=2")
    assert configured["data"]["min_decryption_version"] == 2


def test_bao_cli_errors_reach_the_user(server, root):
    denied = bao(server, server.endpoint_token("encrypter"), "list", "transit/keys", check=False)
    assert denied.returncode != 0 and "permission denied" in denied.stderr
    missing = bao(server, root, "write", "-f", "transit/keys/missing/rotate", check=False)
    assert missing.returncode != 0 and "key not found" in missing.stderr


def test_bao_cli_key_lifecycle_from_vaults_docs(server, root):
    """Vault's transit docs, command by command, through OpenBao's CLI: key creation included."""
    created = bao_json(server, root, "write", "-f", "transit/keys/my-key")
    assert created["data"]["type"] == "aes256-gcm96"
    assert bao_json(server, root, "write", "transit/keys/rsa-key", "type=rsa-2048")["data"]["type"] == "rsa-2048"
    hmac_key = bao_json(server, root, "write", "transit/keys/mac-key", "type=hmac", "key_size=64")
    assert hmac_key["data"]["key_size"] == 64
    plaintext = base64.b64encode(b"my secret data\n").decode()
    datakey = bao_json(server, root, "write", "-f", "transit/datakey/plaintext/my-key")["data"]
    decrypted = bao_json(server, root, "write", "transit/decrypt/my-key", f"ciphertext={datakey['ciphertext']}")
    assert decrypted["data"]["plaintext"] == datakey["plaintext"]
    mac = bao_json(server, root, "write", "transit/hmac/mac-key/sha2-512", f"input={plaintext}")["data"]["hmac"]
    checked = bao_json(server, root, "write", "transit/verify/mac-key/sha2-512", f"input={plaintext}", f"hmac={mac}")
    assert checked["data"]["valid"] is True
    random = bao_json(server, root, "write", "-f", "transit/random/16", "format=hex")["data"]["random_bytes"]
    assert len(bytes.fromhex(random)) == 16
    digest = bao_json(server, root, "write", "transit/hash/sha2-256", f"input={plaintext}")["data"]["sum"]
    assert digest == hashlib.sha256(b"my secret data\n").hexdigest()
    encrypted = bao_json(server, root, "write", "transit/encrypt/rsa-key", f"plaintext={plaintext}")["data"]
    assert (
        bao_json(server, root, "write", "transit/decrypt/rsa-key", f"ciphertext={encrypted['ciphertext']}")["data"][
            "plaintext"
        ]
        == plaintext
    )

    bao(server, root, "write", "transit/keys/my-key/config", "exportable=true", "allow_plaintext_backup=true")
    exported = bao_json(server, root, "read", "transit/export/encryption-key/my-key/1")
    assert len(base64.b64decode(exported["data"]["keys"]["1"])) == 32
    backup = bao_json(server, root, "read", "transit/backup/my-key")["data"]["backup"]
    bao(server, root, "write", "transit/restore/my-key-copy", f"backup={backup}")
    assert bao_json(server, root, "read", "transit/keys/my-key-copy")["data"]["type"] == "aes256-gcm96"

    for _ in range(3):
        bao(server, root, "write", "-f", "transit/keys/my-key/rotate")
    bao(server, root, "write", "transit/keys/my-key/config", "min_decryption_version=3", "min_encryption_version=4")
    trimmed = bao_json(server, root, "write", "transit/keys/my-key/trim", "min_available_version=2")
    assert trimmed["data"]["min_available_version"] == 2
    refused = bao(server, root, "delete", "transit/keys/my-key", check=False)
    assert refused.returncode != 0 and "deletion is not allowed" in refused.stderr
    bao(server, root, "write", "transit/keys/my-key/config", "deletion_allowed=true")
    bao(server, root, "delete", "transit/keys/my-key")
    assert "my-key" not in bao_json(server, root, "list", "transit/keys")
