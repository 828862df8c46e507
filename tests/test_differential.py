"""Differential conformance: hypothesis-generated sequences of transit requests (create each key type,
encrypt, decrypt, rewrap, rotate, config, trim, sign, verify, hmac, datakey, batches with good and bad
items, malformed inputs) go to a real OpenBao dev server and to this service. Status codes, the presence
of errors, field names and JSON types must agree, batch item by item. Values that differ by nature
(ciphertexts, signatures) are kept per target: each server gets back what it made.

The only differences allowed are in ``DIFFERENTIAL_INTENDED`` (built on test_openbao_parity's
``INTENDED_DIFFERENCES``), each with its reason. A failure prints the sequence and hypothesis's seed to
reproduce it. Bounded: a few sequences of a few steps per run (see ``SETTINGS``).
"""

from __future__ import annotations

import base64
import uuid

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, rule, run_state_machine_as_test
from test_openbao_parity import (  # noqa: F401, F811 - fixtures used by name
    INTENDED_DIFFERENCES,
    OPENBAO_ONLY_KEY_FIELDS,
    OURS_ONLY_KEY_FIELDS,
    _shape,
    openbao,
    targets,
)

# Long: `make test` runs the slow group after the rest.
pytestmark = pytest.mark.slow

# step label → (status this service gives, reason). Labels are the rule names below (plus a detail).
DIFFERENTIAL_INTENDED: dict[str, tuple[int, str]] = {
    **INTENDED_DIFFERENCES,
    "encrypt-batch-non-string": (
        400,
        "OpenBao answers 500 (mapstructure's plain error) for a batch item whose plaintext is not a string; "
        "the caller's mistake, so 400 here, as for a non-string field outside a batch (test_bad_input.py)",
    ),
    "hmac-batch-non-string": (400, "as encrypt-batch-non-string, for a batch item's input"),
    "decrypt-batch-non-string": (400, "as encrypt-batch-non-string, for a batch item's ciphertext"),
    "encrypt-batch-null": (
        400,
        "OpenBao fails the whole request with 500 for a null plaintext in a batch item; here that item gets "
        "'missing plaintext to encrypt' (as an absent plaintext does), and the batch its usual status",
    ),
}


def _kind(label: str, items: list) -> str:
    """The label, with "-non-string" when some batch item's value is neither a string nor null, or "-null" when
    one is null (see DIFFERENTIAL_INTENDED)."""
    if any(item is not None and not isinstance(item, str) for item in items):
        return f"{label}-non-string"
    return f"{label}-null" if any(item is None for item in items) else label


@pytest.fixture
def database_url(tmp_path):
    """One database is enough here: what is compared is the HTTP surface, which does not depend on it
    (test_openbao_parity.py and the feature tests run both)."""
    return f"sqlite:///{tmp_path / 'kms.db'}"


SYMMETRIC = ["aes128-gcm96", "aes256-gcm96", "chacha20-poly1305", "xchacha20-poly1305"]
SIGNING = ["ed25519", "ecdsa-p256", "ecdsa-p384", "ecdsa-p521"]  # RSA keygen is too slow for many examples
KEY_TYPES = [*SYMMETRIC, *SIGNING, "hmac"]

SETTINGS = settings(
    max_examples=40,
    stateful_step_count=20,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=list(HealthCheck),
)


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


plaintexts = st.binary(min_size=0, max_size=40).map(b64)
contexts = st.sampled_from([b64(b"ctx-a"), b64(b"ctx-b")])
malformed = st.sampled_from(["not base64!", "vault:v1:", "vault:vX:AAAA", "vault:v99:AAAA", "", "abc", 17, None, []])
small_ints = st.integers(min_value=-1, max_value=5)


COMPARED: list[str] = []


def compare(label: str, ours, theirs, log: list[str]) -> None:
    """Status, error presence, field names and JSON types; batch results item by item."""
    log.append(f"{label}: {theirs.status_code}")
    COMPARED.append(label)
    intended = DIFFERENTIAL_INTENDED.get(label)
    if intended is not None:
        assert ours.status_code == intended[0], f"{label}: intended {intended[0]}, got {ours.status_code}"
        return
    assert ours.status_code == theirs.status_code, (
        f"{label}: status {ours.status_code} != OpenBao's {theirs.status_code}\n"
        f"ours: {ours.text[:300]}\ntheirs: {theirs.text[:300]}\nsteps:\n" + "\n".join(log)
    )
    if theirs.status_code == 204:
        return
    mine, reference = ours.json(), theirs.json()
    assert ("errors" in mine) == ("errors" in reference), f"{label}: {mine} vs {reference}"
    if "errors" in reference:
        assert bool(mine["errors"]) == bool(reference["errors"]), f"{label}: {mine} vs {reference}"
        return
    data, ref = dict(mine.get("data") or {}), dict(reference.get("data") or {})
    for field in (*OPENBAO_ONLY_KEY_FIELDS, *OURS_ONLY_KEY_FIELDS):
        data.pop(field, None)
        ref.pop(field, None)
    if "batch_results" in ref:
        ours_items, their_items = data.pop("batch_results"), ref.pop("batch_results")
        assert len(ours_items) == len(their_items), f"{label}: {len(ours_items)} != {len(their_items)} items"
        for index, (a, b) in enumerate(zip(ours_items, their_items, strict=True)):
            assert ("error" in a and bool(a["error"])) == ("error" in b and bool(b["error"])), (
                f"{label}[{index}]: {a} vs {b}\nsteps:\n" + "\n".join(log)
            )
            assert set(k for k in a if a[k] not in ("", None)) == set(k for k in b if b[k] not in ("", None)), (
                f"{label}[{index}]: fields {sorted(a)} vs {sorted(b)}"
            )
    assert _shape(data) == _shape(ref), f"{label}: {_shape(data)} != {_shape(ref)}\nsteps:\n" + "\n".join(log)


def test_generated_request_sequences_answer_alike(targets):  # noqa: F811 - the imported fixture
    ours_target, their_target = targets

    class Transit(RuleBasedStateMachine):
        keys = Bundle("keys")
        ciphertexts = Bundle("ciphertexts")
        signatures = Bundle("signatures")

        @initialize()
        def start(self):
            self.prefix = f"d{uuid.uuid4().hex[:8]}"
            self.count = 0
            self.log: list[str] = []
            self.types: dict[str, str] = {}
            self.derived: dict[str, bool] = {}

        def send(self, label: str, method: str, path: str, body=None):
            answers = [t.send(method, f"transit/{path}", body) for t in (ours_target, their_target)]
            self.log.append(f"  {method} {path} {body!r:.160}")
            compare(label, *answers, self.log)
            return answers

        def both(self, answers, field: str):
            values = []
            for answer in answers:
                if answer.status_code != 200:
                    return None
                values.append(answer.json()["data"].get(field))
            return tuple(values) if all(values) else None

        @rule(
            target=keys,
            key_type=st.sampled_from(KEY_TYPES),
            derived=st.booleans(),
            convergent=st.booleans(),
            exportable=st.booleans(),
        )
        def create(self, key_type, derived, convergent, exportable):
            self.count += 1
            name = f"{self.prefix}-{self.count}"
            body = {"type": key_type, "exportable": exportable}
            if key_type == "hmac":
                body["key_size"] = 32
            if derived and key_type in (*SYMMETRIC, "ed25519"):
                body["derived"] = True
                body["convergent_encryption"] = convergent and key_type in SYMMETRIC
            self.send("create", "POST", f"keys/{name}", body)
            self.types[name] = key_type
            self.derived[name] = bool(body.get("derived"))
            return name

        def context(self, key):
            return {"context": b64(b"ctx-a")} if self.derived[key] else {}

        @rule(target=ciphertexts, key=keys, plaintext=plaintexts, wrong_context=st.booleans())
        def encrypt(self, key, plaintext, wrong_context):
            body = {"plaintext": plaintext, **self.context(key)}
            if wrong_context and not self.derived[key]:
                body["context"] = b64(b"ignored")
            answers = self.send("encrypt", "POST", f"encrypt/{key}", body)
            pair = self.both(answers, "ciphertext")
            return (key, pair, body.get("context")) if pair else (key, ("vault:v1:AAAA", "vault:v1:AAAA"), None)

        @rule(ct=ciphertexts, other_context=st.booleans())
        def decrypt(self, ct, other_context):
            key, pair, context = ct
            extra = {"context": b64(b"ctx-b") if other_context else context} if context else {}
            answers = [
                t.send("POST", f"transit/decrypt/{key}", {"ciphertext": value, **extra})
                for t, value in zip((ours_target, their_target), pair, strict=True)
            ]
            self.log.append(f"  decrypt {key} other_context={other_context}")
            compare("decrypt", *answers, self.log)

        @rule(ct=ciphertexts)
        def rewrap(self, ct):
            key, pair, context = ct
            extra = {"context": context} if context else {}
            answers = [
                t.send("POST", f"transit/rewrap/{key}", {"ciphertext": value, **extra})
                for t, value in zip((ours_target, their_target), pair, strict=True)
            ]
            self.log.append(f"  rewrap {key}")
            compare("rewrap", *answers, self.log)

        @rule(key=keys, bad=malformed)
        def decrypt_malformed(self, key, bad):
            self.send("decrypt-malformed", "POST", f"decrypt/{key}", {"ciphertext": bad, **self.context(key)})

        @rule(key=keys, items=st.lists(st.one_of(plaintexts, malformed), min_size=1, max_size=4))
        def encrypt_batch(self, key, items):
            batch = [{"plaintext": item, **self.context(key)} for item in items]
            self.send(_kind("encrypt-batch", items), "POST", f"encrypt/{key}", {"batch_input": batch})

        @rule(ct=ciphertexts, bad=malformed)
        def decrypt_batch(self, ct, bad):
            key, pair, context = ct
            extra = {"context": context} if context else {}
            answers = [
                t.send(
                    "POST",
                    f"transit/decrypt/{key}",
                    {"batch_input": [{"ciphertext": value, **extra}, {"ciphertext": bad, **extra}]},
                )
                for t, value in zip((ours_target, their_target), pair, strict=True)
            ]
            self.log.append(f"  decrypt batch {key} + {bad!r}")
            compare(_kind("decrypt-batch", [bad]), *answers, self.log)

        @rule(key=keys)
        def rotate(self, key):
            self.send("rotate", "POST", f"keys/{key}/rotate")

        @rule(key=keys, min_dec=small_ints, min_enc=small_ints)
        def config(self, key, min_dec, min_enc):
            self.send(
                "config",
                "POST",
                f"keys/{key}/config",
                {"min_decryption_version": min_dec, "min_encryption_version": min_enc},
            )

        @rule(key=keys, version=small_ints)
        def trim(self, key, version):
            self.send("trim", "POST", f"keys/{key}/trim", {"min_available_version": version})

        @rule(key=keys)
        def read(self, key):
            self.send("read", "GET", f"keys/{key}")

        @rule(
            target=signatures, key=keys, data=plaintexts, algorithm=st.sampled_from(["sha2-256", "sha2-512", "bogus"])
        )
        def sign(self, key, data, algorithm):
            body = {"input": data, "hash_algorithm": algorithm, **self.context(key)}
            if self.types[key] == "ed25519":
                body.pop("hash_algorithm")
            answers = self.send("sign", "POST", f"sign/{key}", body)
            pair = self.both(answers, "signature")
            return (key, pair, body) if pair else (key, ("vault:v1:AAAA", "vault:v1:AAAA"), body)

        @rule(sig=signatures, tamper=st.booleans())
        def verify(self, sig, tamper):
            key, pair, body = sig
            request = dict(body)
            if tamper:
                request["input"] = b64(b"something else")
            answers = [
                t.send("POST", f"transit/verify/{key}", {**request, "signature": value})
                for t, value in zip((ours_target, their_target), pair, strict=True)
            ]
            self.log.append(f"  verify {key} tamper={tamper}")
            compare("verify", *answers, self.log)

        @rule(key=keys, data=plaintexts, version=small_ints, algorithm=st.sampled_from(["sha2-256", "sha2-384", "md5"]))
        def hmac(self, key, data, version, algorithm):
            answers = self.send("hmac", "POST", f"hmac/{key}/{algorithm}", {"input": data, "key_version": version})
            pair = self.both(answers, "hmac")
            if pair:
                verified = [
                    t.send("POST", f"transit/verify/{key}/{algorithm}", {"input": data, "hmac": value})
                    for t, value in zip((ours_target, their_target), pair, strict=True)
                ]
                compare("verify-hmac", *verified, self.log)

        @rule(key=keys, items=st.lists(st.one_of(plaintexts, malformed), min_size=1, max_size=3))
        def hmac_batch(self, key, items):
            self.send(
                _kind("hmac-batch", items), "POST", f"hmac/{key}", {"batch_input": [{"input": item} for item in items]}
            )

        @rule(
            key=keys, kind=st.sampled_from(["plaintext", "wrapped", "bogus"]), bits=st.sampled_from([128, 256, 512, 7])
        )
        def datakey(self, key, kind, bits):
            self.send("datakey", "POST", f"datakey/{kind}/{key}", {"bits": bits, **self.context(key)})

        @rule(key=keys, kind=st.sampled_from(["encryption-key", "signing-key", "hmac-key", "public-key"]))
        def export(self, key, kind):
            self.send("export", "GET", f"export/{kind}/{key}")

    COMPARED.clear()
    run_state_machine_as_test(Transit, settings=SETTINGS)
    # Not vacuous: many requests, of many kinds, were compared.
    kinds = {label.split("-")[0] for label in COMPARED}
    print(f"{len(COMPARED)} answers compared: {sorted(kinds)}")
    assert len(COMPARED) >= 40 and len(kinds) >= 8, (len(COMPARED), kinds)
