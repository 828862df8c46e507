"""batch_input on encrypt, decrypt, rewrap, sign and verify, with hvac, requests and curl against the real
server: Vault's semantics (transit-api.md, "batch_input semantics")."""

from __future__ import annotations

import base64
import json
import subprocess
from datetime import timedelta

import pytest
import requests

from kms_service.web.framework import MAX_BATCH_ITEMS

# The HTTP surface: the database plays no part here (tests of storage run on both).
pytestmark = pytest.mark.sqlite_only


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


SECRET = b64(b"SECRET\n")
OTHER = b64(b"OTHER")
ENVELOPE = {"request_id", "lease_id", "renewable", "lease_duration", "data", "wrap_info", "warnings", "auth"}


@pytest.fixture
def root(server) -> str:
    return server.call(server.kms.tokens.create(["root"], timedelta(hours=1)))[0]


def post(server, token: str, path: str, body: dict) -> requests.Response:
    return requests.post(f"{server.url}/v1/transit/{path}", json=body, headers={"X-Vault-Token": token}, timeout=120)


def results(response: requests.Response) -> list[dict]:
    document = response.json()
    assert set(document) == ENVELOPE, response.text[:300]
    assert set(document["data"]) == {"batch_results"}
    return document["data"]["batch_results"]


def test_hvac_encrypt_decrypt_rewrap_batches_keep_order_and_references(server):
    crypto = server.client(server.endpoint_token("crypto")).secrets.transit
    plaintexts = [b64(f"item {i}".encode()) for i in range(50)]
    encrypted = crypto.encrypt_data(
        "vault-enc",
        plaintext=None,  # hvac sends "plaintext": null; batch mode ignores it
        batch_input=[{"plaintext": p, "reference": f"ref-{i}"} for i, p in enumerate(plaintexts)],
    )
    assert encrypted["warnings"] is None
    items = encrypted["data"]["batch_results"]
    assert [item["reference"] for item in items] == [f"ref-{i}" for i in range(50)]
    assert all(set(item) == {"ciphertext", "key_version", "reference"} for item in items)
    assert all(item["key_version"] == 1 and item["ciphertext"].startswith("vault-kms:v1:") for item in items)
    assert len({item["ciphertext"] for item in items}) == 50

    decrypted = crypto.decrypt_data(
        "vault-enc", ciphertext=None, batch_input=[{"ciphertext": item["ciphertext"]} for item in items]
    )["data"]["batch_results"]
    assert decrypted == [{"plaintext": p, "reference": ""} for p in plaintexts]

    crypto.rotate_key("vault-enc")
    rewrapped = crypto.rewrap_data(
        "vault-enc", ciphertext=None, batch_input=[{"ciphertext": item["ciphertext"]} for item in items]
    )["data"]["batch_results"]
    assert all(item["key_version"] == 2 and item["ciphertext"].startswith("vault-kms:v2:") for item in rewrapped)
    again = crypto.decrypt_data(
        "vault-enc", ciphertext=None, batch_input=[{"ciphertext": item["ciphertext"]} for item in rewrapped]
    )["data"]["batch_results"]
    assert [item["plaintext"] for item in again] == plaintexts


def test_hvac_sign_batch_then_verify_batch(server):
    token = server.endpoint_token("manage_keys")
    signer = server.client(token).secrets.transit
    signed = signer.sign_data(
        "vault-sign",
        batch_input=[{"input": SECRET, "reference": "a"}, {"input": OTHER, "reference": "b"}],
        hash_algorithm="sha2-512",
    )["data"]["batch_results"]
    assert [item["reference"] for item in signed] == ["a", "b"]
    assert all(set(item) == {"signature", "key_version", "reference"} for item in signed)
    assert all(item["key_version"] == 1 and item["signature"].startswith("vault-kms:v1:") for item in signed)

    # hvac's verify_signed_data has no batch_input: the request as Vault's docs show it.
    verified = post(
        server,
        token,
        "verify/vault-sign/sha2-512",
        {
            "batch_input": [
                {"input": SECRET, "signature": signed[0]["signature"], "reference": "right"},
                {"input": SECRET, "signature": signed[1]["signature"], "reference": "wrong"},
                {"input": OTHER, "signature": signed[1]["signature"]},
                {"input": SECRET, "signature": "vault-kms:v1:!!!!", "reference": "junk"},
            ]
        },
    )
    assert verified.status_code == 200
    items = results(verified)
    assert items[:3] == [
        {"valid": True, "reference": "right"},
        {"valid": False, "reference": "wrong"},
        {"valid": True, "reference": ""},
    ]
    assert items[3]["valid"] is False and "base64" in items[3]["error"] and items[3]["reference"] == "junk"


def test_one_bad_encrypt_item_fails_alone_and_makes_the_status_400(server, root):
    batch = [
        {"plaintext": SECRET, "reference": "good-1"},
        {"plaintext": "%%%", "reference": "bad-base64"},
        {"plaintext": SECRET, "nonce": b64(b"\0" * 12), "reference": "nonce"},
        {"plaintext": SECRET, "key_version": 99, "reference": "version"},
        {"plaintext": OTHER, "reference": "good-2"},
    ]
    response = post(server, root, "encrypt/vault-enc", {"batch_input": batch})
    assert response.status_code == 400
    assert response.headers["Content-Type"] == "application/json"
    items = results(response)
    assert [item["reference"] for item in items] == [item["reference"] for item in batch]
    assert items[1] == {"error": "illegal base64 data in field 'plaintext'", "reference": "bad-base64"}
    assert items[2] == {"error": "provided nonce not allowed for this key", "reference": "nonce"}
    assert items[3] == {
        "error": "requested version for encryption is higher than the latest key version",
        "reference": "version",
    }
    for good in (items[0], items[4]):
        assert set(good) == {"ciphertext", "key_version", "reference"}
    # The good items really are ciphertexts of their inputs.
    decrypted = post(server, root, "decrypt/vault-enc", {"batch_input": [{"ciphertext": items[4]["ciphertext"]}]})
    assert results(decrypted) == [{"plaintext": OTHER, "reference": ""}]


def test_each_encrypt_item_answers_as_its_own_request_would(server, root):
    """Items without options of their own are encrypted together per requested version (one draw of
    nonces); the others one by one. Whatever the mix, each item's answer is its own request's."""
    assert post(server, root, "keys/vault-enc/rotate", {}).status_code == 200  # versions 1 and 2
    assert post(server, root, "keys/vault-enc/config", {"min_encryption_version": 2}).status_code == 200
    batch = [
        {"plaintext": SECRET},
        {"plaintext": OTHER, "key_version": 2},
        {"plaintext": SECRET, "associated_data": b64(b"header")},
        {"plaintext": OTHER, "key_version": 1},  # under min_encryption_version: refused
        {"plaintext": SECRET, "key_version": 7},  # no such version
        {"plaintext": b64(b"")},
        {"plaintext": SECRET, "key_version": 7},
        {"plaintext": OTHER},
    ]
    answered = results(post(server, root, "encrypt/vault-enc", {"batch_input": batch}))
    for item, answer in zip(batch, answered, strict=True):
        alone = post(server, root, "encrypt/vault-enc", item).json()
        if "errors" in alone:
            assert answer == {"error": alone["errors"][0], "reference": ""}
            continue
        assert set(answer) == {"ciphertext", "key_version", "reference"}
        assert answer["key_version"] == alone["data"]["key_version"] == 2
        opened = post(server, root, "decrypt/vault-enc", {**item, "ciphertext": answer["ciphertext"]}).json()
        assert opened["data"]["plaintext"] == item["plaintext"]
    assert sum("error" in answer for answer in answered) == 3
    assert len({answer.get("ciphertext") for answer in answered if "ciphertext" in answer}) == 5


def test_each_decrypt_item_answers_as_its_own_request_would(server, root):
    """Items without options of their own are opened together per version (Key.decrypt_many); the others,
    and those it refuses, one by one. Whatever the mix, each item's answer is its own request's."""
    assert post(server, root, "keys/vault-enc/rotate", {}).status_code == 200  # versions 1 and 2
    v1 = post(server, root, "encrypt/vault-enc", {"plaintext": SECRET, "key_version": 1}).json()["data"]["ciphertext"]
    v2 = post(server, root, "encrypt/vault-enc", {"plaintext": OTHER}).json()["data"]["ciphertext"]
    with_aad = post(server, root, "encrypt/vault-enc", {"plaintext": SECRET, "associated_data": b64(b"h")}).json()
    body = base64.b64decode(v2.split(":")[2])
    batch = [
        {"ciphertext": v1},
        {"ciphertext": v2},
        {"ciphertext": with_aad["data"]["ciphertext"], "associated_data": b64(b"h")},
        {"ciphertext": with_aad["data"]["ciphertext"]},  # its associated data missing: authentication fails
        {"ciphertext": "vault-kms:v2:" + b64(body[:-1] + bytes([body[-1] ^ 1]))},  # tampered
        {"ciphertext": "vault-kms:v7:" + v2.split(":")[2]},  # no such version
        {"ciphertext": "vault-kms:v2:%%%%"},
        {"ciphertext": "vault:v1:" + v1.split(":")[2]},  # Vault's prefix
        {"ciphertext": "nonsense"},
        {"ciphertext": v2},
    ]
    answered = results(post(server, root, "decrypt/vault-enc", {"batch_input": batch}))
    for item, answer in zip(batch, answered, strict=True):
        alone = post(server, root, "decrypt/vault-enc", item).json()
        if "errors" in alone:  # an error item keeps an empty plaintext, as Vault's
            assert answer == {"plaintext": "", "error": alone["errors"][0], "reference": ""}, (item, answer)
        else:
            assert answer == {"plaintext": alone["data"]["plaintext"], "reference": ""}
    expected = [SECRET, OTHER, SECRET, "", "", "", "", SECRET, "", OTHER]
    assert [answer["plaintext"] for answer in answered] == expected


@pytest.mark.parametrize(
    ("path", "options"),
    [
        ("hmac/vault-enc", {}),
        ("hmac/vault-enc/sha2-512", {}),
        ("hmac/vault-enc", {"key_version": 1}),
        ("hmac/vault-enc", {"algorithm": "md5"}),  # refused: every item gets the single request's error
        ("hmac/vault-enc", {"key_version": 9}),
    ],
)
def test_each_hmac_item_answers_as_its_own_request_would(server, root, path, options):
    """A batch's HMACs are computed together (Key.hmac_many: the version, its key and the hash once); each
    item's answer, or error, is still its own request's."""
    assert post(server, root, "keys/vault-enc/rotate", {}).status_code == 200  # versions 1 and 2
    batch = [{"input": SECRET}, {"input": b64(b"")}, {"input": OTHER}, {"input": SECRET}]
    answered = results(post(server, root, path, {**options, "batch_input": batch}))
    for item, answer in zip(batch, answered, strict=True):
        alone = post(server, root, path, {**options, **item}).json()
        if "errors" in alone:
            assert answer == {"error": alone["errors"][0], "reference": ""}, (item, answer)
        else:
            assert answer == {"hmac": alone["data"]["hmac"], "reference": ""}
    assert answered[0] == answered[3] and len({answer.get("hmac") for answer in answered}) in (1, 3)


# (items' plaintexts, partial_failure_response_code, status, warning substring or None)
PARTIAL_FAILURE_CASES = [
    ([SECRET, "%%%"], 207, 207, None),
    ([SECRET, "%%%"], "299", 299, None),
    (["%%%", "%%%"], 207, 400, None),  # nothing succeeded: 400 regardless
    ([SECRET, SECRET], 207, 200, None),  # nothing failed
    ([SECRET, "%%%"], 600, 400, "reverting to 400"),
    ([SECRET, "%%%"], 204, 400, "reverting to 400"),  # 204 cannot carry the results
]


def test_partial_failure_response_code(server, root):
    for batch, code, status, warning in PARTIAL_FAILURE_CASES:
        body = {"batch_input": [{"plaintext": p} for p in batch], "partial_failure_response_code": code}
        response = post(server, root, "encrypt/vault-enc", body)
        where = (batch, code, response.text[:300])
        assert response.status_code == status, where
        assert len(results(response)) == 2, where
        warnings = response.json()["warnings"]
        if warning is None:
            assert warnings is None, where
        else:
            assert len(warnings) == 1 and warning in warnings[0], where
            assert "partial_failure_response_code" in warnings[0], where


def test_decrypt_batch_status_and_error_items(server, root):
    made = results(post(server, root, "encrypt/vault-enc", {"batch_input": [{"plaintext": SECRET}]}))[0]
    batch = [
        {"ciphertext": made["ciphertext"], "reference": "ok"},
        {"ciphertext": "abc", "reference": "no-prefix"},
        {"ciphertext": "", "reference": "empty"},
        {"ciphertext": made["ciphertext"], "associated_data": OTHER, "reference": "wrong-aad"},
        {"ciphertext": "vault-kms:v9:AAAA", "reference": "too-new"},
    ]
    response = post(server, root, "decrypt/vault-enc", {"batch_input": batch, "partial_failure_response_code": 207})
    assert response.status_code == 207
    items = results(response)
    assert items[0] == {"plaintext": SECRET, "reference": "ok"}
    assert items[1] == {"plaintext": "", "error": "invalid ciphertext: no prefix", "reference": "no-prefix"}
    assert items[2] == {"plaintext": "", "error": "missing ciphertext to decrypt", "reference": "empty"}
    assert items[3]["plaintext"] == "" and "authentication" in items[3]["error"]
    assert items[4]["error"] == "invalid ciphertext: version is too new"
    alone = post(server, root, "decrypt/vault-enc", {"batch_input": batch[1:]})
    assert alone.status_code == 400 and len(results(alone)) == 4


def test_rewrap_sign_and_verify_batches_answer_200_with_item_errors(server, root):
    made = results(post(server, root, "encrypt/vault-enc", {"batch_input": [{"plaintext": SECRET}]}))[0]
    rewrapped = post(
        server, root, "rewrap/vault-enc", {"batch_input": [{"ciphertext": made["ciphertext"]}, {"ciphertext": "x"}]}
    )
    assert rewrapped.status_code == 200
    items = results(rewrapped)
    assert set(items[0]) == {"ciphertext", "key_version", "reference"}
    assert items[1] == {"error": "invalid ciphertext: no prefix", "reference": ""}

    signed = post(
        server,
        root,
        "sign/vault-sign/sha2-256",
        {"batch_input": [{"input": SECRET}, {"input": "%%%", "reference": "junk"}, {"reference": "no-input"}]},
    )
    assert signed.status_code == 200
    items = results(signed)
    assert items[0]["key_version"] == 1
    assert items[1] == {"key_version": 0, "error": "illegal base64 data in field 'input'", "reference": "junk"}
    assert items[2] == {"key_version": 0, "error": "missing input", "reference": "no-input"}

    # A key-level error (the version) is every item's error; still 200, key_version 0.
    too_new = post(server, root, "sign/vault-sign", {"key_version": 5, "batch_input": [{"input": SECRET}] * 2})
    assert too_new.status_code == 200
    assert (
        results(too_new)
        == [
            {
                "key_version": 0,
                "error": "requested version for signing is higher than the latest key version",
                "reference": "",
            }
        ]
        * 2
    )

    verified = post(
        server,
        root,
        "verify/vault-sign/sha2-256",
        {"batch_input": [{"input": SECRET, "signature": items[0]["signature"]}, {"input": SECRET, "signature": "x"}]},
    )
    assert verified.status_code == 200
    assert results(verified) == [
        {"valid": True, "reference": ""},
        {"valid": False, "error": "invalid signature: no prefix", "reference": ""},
    ]


def test_top_level_item_fields_are_ignored_in_batch_mode(server, root):
    body = {
        "plaintext": "%%%",
        "context": "%%%",
        "key_version": 99,
        "nonce": "anything",
        "batch_input": [{"plaintext": SECRET}],
    }
    response = post(server, root, "encrypt/vault-enc", body)
    assert response.status_code == 200, response.text
    assert response.json()["warnings"] is None  # declared fields: no "unrecognized parameters" warning
    assert results(response)[0]["key_version"] == 1
    # Request-level fields still count: sign's hash algorithm comes from the URL or the body.
    signed = post(server, root, "sign/vault-sign", {"input": "%%%", "batch_input": [{"input": SECRET}], "foo": 1})
    assert signed.status_code == 200
    assert signed.json()["warnings"] == ["Endpoint ignored these unrecognized parameters: [foo]"]


REQUEST_ERRORS = [
    ("encrypt/vault-enc", {"batch_input": []}, "missing batch input to process"),
    ("decrypt/vault-enc", {"batch_input": []}, "missing batch input to process"),
    ("rewrap/vault-enc", {"batch_input": []}, "missing batch input to process"),
    ("sign/vault-sign", {"batch_input": []}, "missing batch input to process"),
    ("verify/vault-sign", {"batch_input": []}, "missing batch input to process"),
    (
        "encrypt/vault-enc",
        {"batch_input": [{"plaintext": SECRET}, {"reference": "x"}]},
        "failed to parse batch input: '[1].plaintext' missing plaintext to encrypt",
    ),
    (
        "decrypt/vault-enc",
        {"batch_input": [{"reference": "x"}]},
        "failed to parse batch input: '[0].ciphertext' missing ciphertext to decrypt",
    ),
    ("encrypt/vault-enc", {"batch_input": [{"plaintext": 5}]}, "failed to parse batch input: '[0].plaintext' must"),
    ("encrypt/vault-enc", {"batch_input": [{"plaintext": SECRET, "key_version": "x"}]}, "'[0].key_version'"),
    ("encrypt/vault-enc", {"batch_input": [{"plaintext": SECRET, "reference": 5}]}, "'[0].reference' must"),
    ("encrypt/vault-enc", {"batch_input": [SECRET]}, "failed to parse batch input: '[0]' must be an object"),
    ("encrypt/vault-enc", {"batch_input": SECRET}, "failed to parse batch input"),
    (
        "encrypt/vault-enc",
        {"batch_input": [{"plaintext": SECRET, "context": OTHER}, {"plaintext": SECRET}]},
        "context should be set either in all the request blocks or in none",
    ),
    (
        "verify/vault-sign",
        {"batch_input": [{"input": SECRET, "signature": "vault:v1:AA=="}, {"input": SECRET}]},
        "some elements of batch_input are missing 'signature'",
    ),
    ("verify/vault-sign", {"batch_input": [{"input": SECRET}]}, "no batch_input elements have 'signature' or 'hmac'"),
    (
        "verify/vault-sign",
        {"batch_input": [{"input": SECRET, "signature": "vault:v1:AA=="}, {"hmac": "vault:v1:AA=="}]},
        "elements of batch_input must all provide 'signature' or all provide 'hmac'",
    ),
    ("decrypt/missing", {"batch_input": [{"ciphertext": "vault:v1:AAAA"}]}, "encryption key not found"),
    ("sign/vault-enc", {"batch_input": [{"input": SECRET}]}, "does not support signing"),
    ("sign/vault-sign/sha2-999", {"batch_input": [{"input": SECRET}]}, "invalid hash algorithm"),
]


def test_request_wide_errors_fail_the_whole_batch(server, root):
    failures = []
    for path, body, message in REQUEST_ERRORS:
        response = post(server, root, path, body)
        errors = response.json().get("errors") or []
        if response.status_code != 400 or len(errors) != 1 or message not in errors[0]:
            failures.append(f"{path} {message!r}: {response.status_code} {response.text[:200]}")
    assert not failures, "\n".join(failures)


def test_size_limit_and_a_batch_of_ten_thousand_encrypts(server):
    crypto = server.client(server.endpoint_token("crypto")).secrets.transit
    token = server.endpoint_token("crypto")
    too_many = post(
        server, token, "encrypt/vault-enc", {"batch_input": [{"plaintext": SECRET}] * (MAX_BATCH_ITEMS + 1)}
    )
    assert too_many.status_code == 400
    assert too_many.json() == {
        "errors": [f"batch_input has {MAX_BATCH_ITEMS + 1} items; at most 10000 are processed per request"]
    }

    batch = [{"plaintext": b64(str(i).encode()), "reference": str(i)} for i in range(MAX_BATCH_ITEMS)]
    encrypted = crypto.encrypt_data("vault-enc", plaintext=None, batch_input=batch)["data"]["batch_results"]
    assert len(encrypted) == MAX_BATCH_ITEMS
    assert [item["reference"] for item in encrypted] == [str(i) for i in range(MAX_BATCH_ITEMS)]
    assert not any("error" in item for item in encrypted)
    decrypted = crypto.decrypt_data(
        "vault-enc",
        ciphertext=None,
        batch_input=[{"ciphertext": item["ciphertext"], "reference": item["reference"]} for item in encrypted],
    )["data"]["batch_results"]
    assert [(item["plaintext"], item["reference"]) for item in decrypted] == [
        (item["plaintext"], item["reference"]) for item in batch
    ]


def test_the_key_is_loaded_once_per_request_not_per_item(server, root, monkeypatch):
    calls = []
    get = server.kms.keys.get

    async def counting_get(name, *args, **kwargs):
        calls.append(name)
        return await get(name, *args, **kwargs)

    monkeypatch.setattr(server.kms.keys, "get", counting_get)
    made = results(post(server, root, "encrypt/vault-enc", {"batch_input": [{"plaintext": SECRET}] * 20}))
    signed = results(post(server, root, "sign/vault-sign", {"batch_input": [{"input": SECRET}] * 20}))
    cts = [{"ciphertext": item["ciphertext"]} for item in made]
    post(server, root, "decrypt/vault-enc", {"batch_input": cts})
    post(server, root, "rewrap/vault-enc", {"batch_input": cts})
    sigs = [{"input": SECRET, "signature": item["signature"]} for item in signed]
    post(server, root, "verify/vault-sign", {"batch_input": sigs})
    # Encrypt's one lookup is Vault's existence check (create or update); the handler reuses its key.
    assert calls == ["vault-enc", "vault-sign", "vault-enc", "vault-enc", "vault-sign"]


def test_curl_batch_as_in_vaults_docs(server):
    token = server.endpoint_token("crypto")
    body = json.dumps({"batch_input": [{"plaintext": SECRET, "reference": "one"}, {"plaintext": OTHER}]})
    output = subprocess.run(
        [
            "curl",
            "--silent",
            "--header",
            f"X-Vault-Token: {token}",
            "--data",
            body,
            f"{server.url}/v1/transit/encrypt/vault-enc",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    items = json.loads(output)["data"]["batch_results"]
    assert [item["reference"] for item in items] == ["one", ""]
    assert all(item["ciphertext"].startswith("vault-kms:v1:") for item in items)


def test_the_batch_limit_is_a_setting(start_server):
    server = start_server(max_batch_items=5)
    token = server.root_token()
    over = post(server, token, "encrypt/vault-enc", {"batch_input": [{"plaintext": SECRET}] * 6})
    assert over.status_code == 400 and "at most 5 are processed per request" in over.json()["errors"][0]
    assert post(server, token, "encrypt/vault-enc", {"batch_input": [{"plaintext": SECRET}] * 5}).status_code == 200


def test_batches_past_the_offload_threshold_answer_every_item_on_every_batch_path(server, root):
    """From OFFLOAD_ITEMS items on, a batch is answered in a worker thread: the same answers, item by item,
    in order, for encrypt, decrypt, sign, verify and hmac (hvac, default settings), 1,000 items each."""
    from kms_service.web.execution import OFFLOAD_ITEMS

    count = 1000
    assert count >= OFFLOAD_ITEMS
    client = server.client(root)
    texts = [b64(f"item {i}".encode()) for i in range(count)]
    transit = client.secrets.transit
    encrypted = transit.encrypt_data("vault-enc", plaintext="", batch_input=[{"plaintext": t} for t in texts])
    ciphertexts = [item["ciphertext"] for item in encrypted["data"]["batch_results"]]
    assert len(set(ciphertexts)) == count
    decrypted = transit.decrypt_data("vault-enc", ciphertext="", batch_input=[{"ciphertext": c} for c in ciphertexts])
    assert [item["plaintext"] for item in decrypted["data"]["batch_results"]] == texts

    signed = transit.sign_data(
        "vault-sign", batch_input=[{"input": t, "reference": str(i)} for i, t in enumerate(texts)]
    )
    signatures = signed["data"]["batch_results"]
    assert [item["reference"] for item in signatures] == [str(i) for i in range(count)]
    # Every signature verifies against its own input, and none against a neighbour's.
    pairs = [{"input": t, "signature": s["signature"]} for t, s in zip(texts, signatures, strict=True)]
    swapped = [{"input": texts[(i + 1) % count], "signature": s["signature"]} for i, s in enumerate(signatures)]
    verified = post(server, root, "verify/vault-sign", {"batch_input": pairs + swapped})
    assert verified.status_code == 200, verified.text[:300]
    assert [item["valid"] for item in results(verified)] == [True] * count + [False] * count

    macs = post(server, root, "hmac/vault-enc", {"batch_input": [{"input": t} for t in texts]})
    assert macs.status_code == 200, macs.text[:300]
    hmacs = [item["hmac"] for item in results(macs)]
    single = post(server, root, "hmac/vault-enc", {"input": texts[count - 1]}).json()["data"]["hmac"]
    assert hmacs[count - 1] == single and len(set(hmacs)) == count
