"""Vault's and OpenBao's own key formats, for moving keys in and out (``kms-service migrate-from`` /
``migrate-to``). Pure, no I/O.

* Vault's ``backup/:name`` is base64 of a JSON document ``{"policy": ..., "archived_keys": {"keys": [...]}}``
  (its keysutil policy as stored). Written here from what the wire shows (transit-api.md and backups read
  from a running OpenBao), not from Vault's code. The fields used:

  - ``policy.keys``: ``{"<version>": entry}`` for the live versions (``min_decryption_version`` and up);
  - ``archived_keys.keys``: a list of entries where index ``i`` is version ``policy.archive_min_version + i``
    (index 0 is an empty placeholder for version 0 until a trim moves ``archive_min_version`` up); it holds
    every version not trimmed, the ones below ``min_decryption_version`` too;
  - an entry: ``key`` (base64; the raw symmetric or hmac key, or Go's 64-byte ed25519 private key),
    ``hmac_key`` (base64), ``time`` (RFC 3339), ``creation_time`` (unix seconds), ``ec_d``/``ec_x``/``ec_y``
    (JSON integers), ``rsa_key`` (Go's ``rsa.PrivateKey`` as JSON: ``N``, ``E``, ``D``, ``Primes``),
    ``rsa_public_key`` (``N``, ``E``), ``public_key`` (ed25519 base64, ECDSA PEM), ``certificate_chain``
    (base64 DER certificates);
  - ``policy.type``: a number whose meaning differs between Vault and OpenBao (``TYPE_NUMBERS``).

* ``export/<type>/:name`` shows each live version's key as text (transit-api.md §2.5): base64 raw for
  symmetric and hmac keys, PKCS#1 / SEC 1 PEM for RSA / ECDSA, base64 of Go's 64 bytes for ed25519.

Everything here maps those to this service's ``KeyMaterial`` (PKCS#8 DER private keys, SPKI DER public
keys, one HMAC key per version) and back. Errors never carry key material.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from kms_service.keyring import Key
from kms_service.keytypes import KeyType
from kms_service.material import KeyMaterial, Origin

# Vault's keysutil KeyType numbers, as stored in backups. OpenBao forked before Vault added managed keys;
# its hmac and xchacha20 numbers differ from Vault's (transit-api.md §7), the rest agree.
_COMMON_NUMBERS = {
    "aes256-gcm96": 0,
    "ecdsa-p256": 1,
    "ed25519": 2,
    "rsa-2048": 3,
    "rsa-4096": 4,
    "chacha20-poly1305": 5,
    "ecdsa-p384": 6,
    "ecdsa-p521": 7,
    "aes128-gcm96": 8,
    "rsa-3072": 9,
}
TYPE_NUMBERS: dict[str, dict[str, int]] = {
    "openbao": {**_COMMON_NUMBERS, "hmac": 10, "xchacha20-poly1305": 11},
    "vault": {**_COMMON_NUMBERS, "hmac": 11},
}

_CURVES = {"ecdsa-p256": ec.SECP256R1, "ecdsa-p384": ec.SECP384R1, "ecdsa-p521": ec.SECP521R1}


class FormatError(ValueError):
    """A backup or export that does not read as the key it claims to be. The message names the field, never
    its value."""


@dataclass(frozen=True)
class SourceVersion:
    version: int
    created_at: datetime
    material: KeyMaterial


# -- Vault → here ---------------------------------------------------------------------------------------------


def parse_backup(
    text: str, key_type: KeyType, imported_latest: bool = False
) -> tuple[dict[str, Any], list[SourceVersion]]:
    """The policy fields and every version (live and archived, not trimmed) of a Vault/OpenBao backup."""
    try:
        document = json.loads(base64.b64decode(text, validate=True))
        policy = document["policy"]
        live = policy.get("keys") or {}
        archived = (document.get("archived_keys") or {}).get("keys") or []
        archive_min = int(policy.get("archive_min_version") or 0)
        latest = int(policy["latest_version"])
    except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as exc:
        raise FormatError(f"not a Vault key backup ({type(exc).__name__})") from None
    entries: dict[int, dict[str, Any]] = {}
    for index, entry in enumerate(archived):
        number = archive_min + index
        if number >= 1 and isinstance(entry, dict) and _has_key(entry):
            entries[number] = entry
    for number, entry in live.items():
        if isinstance(entry, dict) and _has_key(entry):
            entries[int(number)] = entry  # the live copy wins (a certificate chain set after archiving)
    versions = [
        SourceVersion(
            number,
            _entry_time(entries[number]),
            material_from_entry(key_type, entries[number], imported=imported_latest and number == latest),
        )
        for number in sorted(entries)
        if number <= latest
    ]
    return policy, versions


def _has_key(entry: dict[str, Any]) -> bool:
    return any(entry.get(name) for name in ("key", "ec_d", "ec_x", "rsa_key", "rsa_public_key", "public_key"))


def _entry_time(entry: dict[str, Any]) -> datetime:
    text = entry.get("time")
    if isinstance(text, str) and text and not text.startswith("0001-"):
        try:
            return datetime.fromisoformat(text).astimezone(UTC)
        except ValueError:
            pass
    seconds = entry.get("creation_time")
    if isinstance(seconds, int) and seconds > 0:
        return datetime.fromtimestamp(seconds, UTC)
    return datetime.now(UTC)


def material_from_entry(key_type: KeyType, entry: dict[str, Any], imported: bool = False) -> KeyMaterial:
    """One backup entry as this service's material."""
    origin = Origin.IMPORTED if imported else Origin.GENERATED
    try:
        hmac_key = _b64(entry.get("hmac_key") or "")
        chain = _chain_pem(entry.get("certificate_chain"))
        name = key_type.name
        public_der: bytes | None = None
        private: Any = None
        if key_type.symmetric:
            key = _b64(entry["key"])
            if name == "hmac" and not hmac_key:
                hmac_key = key
            return _checked(key_type, KeyMaterial(key=key, hmac_key=hmac_key, origin=origin))
        if name == "ed25519":
            if entry.get("key"):
                private = ed25519.Ed25519PrivateKey.from_private_bytes(_b64(entry["key"])[:32])
            else:
                public = ed25519.Ed25519PublicKey.from_public_bytes(_b64(entry["public_key"]))
                public_der = _spki(public)
        elif name in _CURVES:
            curve = _CURVES[name]()
            numbers = ec.EllipticCurvePublicNumbers(int(entry["ec_x"]), int(entry["ec_y"]), curve)
            if entry.get("ec_d") is not None:
                private = ec.EllipticCurvePrivateNumbers(int(entry["ec_d"]), numbers).private_key()
            else:
                public_der = _spki(numbers.public_key())
        elif name.startswith("rsa-"):
            if entry.get("rsa_key"):
                private = _rsa_private(entry["rsa_key"])
            else:
                pub = entry["rsa_public_key"]
                public_der = _spki(rsa.RSAPublicNumbers(int(pub["E"]), int(pub["N"])).public_key())
        else:
            raise FormatError(f"key type {name} cannot be read from a Vault backup")
    except FormatError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError, IndexError, binascii.Error) as exc:
        raise FormatError(f"a version's key does not read as {key_type.name} ({type(exc).__name__})") from None
    extra = {"certificate_chain": chain} if chain else {}
    if private is not None:
        material = KeyMaterial(
            key=_pkcs8(private), hmac_key=hmac_key, public_key=_spki(private.public_key()), origin=origin, extra=extra
        )
    else:
        material = KeyMaterial(key=b"", hmac_key=hmac_key, public_key=public_der, origin=Origin.IMPORTED, extra=extra)
    return _checked(key_type, material)


def material_from_export(
    key_type: KeyType, key_text: str | None, hmac_text: str, imported: bool = False
) -> KeyMaterial:
    """One version from ``export/encryption-key|signing-key`` (``key_text``; None for the hmac type) and
    ``export/hmac-key``."""
    origin = Origin.IMPORTED if imported else Origin.GENERATED
    try:
        hmac_key = _b64(hmac_text)
        name = key_type.name
        if name == "hmac":
            return _checked(key_type, KeyMaterial(key=hmac_key, hmac_key=hmac_key, origin=origin))
        if key_text is None:
            raise FormatError("missing key")
        if key_type.symmetric:
            return _checked(key_type, KeyMaterial(key=_b64(key_text), hmac_key=hmac_key, origin=origin))
        if name == "ed25519":
            private: Any = ed25519.Ed25519PrivateKey.from_private_bytes(_b64(key_text)[:32])
        else:
            private = serialization.load_pem_private_key(key_text.encode("ascii"), password=None)
    except FormatError:
        raise
    except (ValueError, TypeError, UnicodeError, binascii.Error) as exc:
        raise FormatError(f"an exported key does not read as {key_type.name} ({type(exc).__name__})") from None
    material = KeyMaterial(
        key=_pkcs8(private), hmac_key=hmac_key, public_key=_spki(private.public_key()), origin=origin
    )
    return _checked(key_type, material)


def _checked(key_type: KeyType, material: KeyMaterial) -> KeyMaterial:
    try:
        key_type.load(material)
    except Exception:  # noqa: BLE001 - foreign bytes into the crypto libraries: any failure is the input's
        raise FormatError(f"a version's key does not fit key type {key_type.name}") from None
    return material


def _rsa_private(doc: dict[str, Any]) -> rsa.RSAPrivateKey:
    n, e, d = int(doc["N"]), int(doc["E"]), int(doc["D"])
    primes = [int(p) for p in doc["Primes"]]
    if len(primes) != 2:
        raise FormatError("RSA keys with other than two primes are not supported")
    p, q = primes
    numbers = rsa.RSAPrivateNumbers(
        p=p,
        q=q,
        d=d,
        dmp1=rsa.rsa_crt_dmp1(d, p),
        dmq1=rsa.rsa_crt_dmq1(d, q),
        iqmp=rsa.rsa_crt_iqmp(p, q),
        public_numbers=rsa.RSAPublicNumbers(e, n),
    )
    return numbers.private_key()


def _chain_pem(value: Any) -> str:
    if not value:
        return ""
    certs = [x509.load_der_x509_certificate(_b64(item)) for item in value]
    return "\n".join(c.public_bytes(serialization.Encoding.PEM).decode("ascii").strip() for c in certs)


# -- here → Vault ---------------------------------------------------------------------------------------------


def encode_backup(key: Key, flavor: str, now: datetime | None = None) -> str:
    """A backup of ``key`` in Vault's format, for ``restore`` on a Vault (``flavor`` "vault") or OpenBao
    ("openbao") server: every version this service holds, with its number, HMAC key and the key's min
    versions and settings."""
    numbers = TYPE_NUMBERS[flavor]
    name = key.key_type.name
    if name not in numbers:
        raise FormatError(f"{flavor} has no key type {name}")
    s = key.settings
    entries = {v: _entry(key.key_type, kv.material, kv.created_at) for v, kv in sorted(key.versions.items())}
    archive_min = s.min_available_version
    archived = []
    placeholder = _entry(key.key_type, None, datetime(1, 1, 1, tzinfo=UTC))
    for number in range(archive_min, key.latest_version + 1):
        archived.append(entries.get(number, placeholder))
    policy: dict[str, Any] = {
        "name": key.name,
        "keys": {str(v): e for v, e in entries.items() if v >= s.min_decryption_version},
        "derived": s.derived,
        "kdf": 1 if s.derived else 0,  # hkdf_sha256
        "convergent_encryption": s.convergent_encryption,
        "convergent_version": -1 if s.convergent_encryption else 0,
        "exportable": s.exportable,
        "min_decryption_version": s.min_decryption_version,
        "min_encryption_version": s.min_encryption_version,
        "latest_version": key.latest_version,
        "archive_version": key.latest_version,
        "archive_min_version": archive_min,
        "min_available_version": s.min_available_version,
        "deletion_allowed": s.deletion_allowed,
        "type": numbers[name],
        "backup_info": {"time": _rfc3339(now or datetime.now(UTC)), "version": key.latest_version},
        "restore_info": None,
        "allow_plaintext_backup": s.allow_plaintext_backup,
        "version_template": "",
        "storage_prefix": "",
        "auto_rotate_period": s.auto_rotate_period * 1_000_000_000,  # Go's time.Duration: nanoseconds
        "Imported": key.imported,
        "AllowImportedKeyRotation": s.allow_imported_key_rotation,
    }
    if name == "hmac":
        policy["key_size"] = key.key_size
    document = {"policy": policy, "archived_keys": {"keys": archived}}
    return base64.b64encode(json.dumps(document).encode()).decode("ascii")


def _entry(key_type: KeyType, material: KeyMaterial | None, created_at: datetime) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "key": None,
        "hmac_key": None,
        "time": _rfc3339(created_at),
        "ec_x": None,
        "ec_y": None,
        "ec_d": None,
        "rsa_key": None,
        "rsa_public_key": None,
        "public_key": "",
        "convergent_version": 0,
        "creation_time": int(created_at.timestamp()) if material is not None else 0,
        "certificate_chain": None,
    }
    if material is None:
        return entry
    entry["hmac_key"] = _text(material.hmac_key)
    name = key_type.name
    if key_type.symmetric:
        entry["key"] = _text(material.key)
        if name != "hmac" and key_type.supports_convergent_encryption:
            entry["convergent_version"] = 3
        return entry
    private = serialization.load_der_private_key(material.key, password=None) if material.has_private_key else None
    public: Any = (
        serialization.load_der_public_key(material.public_key) if material.public_key else private.public_key()
    )
    if name == "ed25519":
        raw_public = public.public_bytes_raw()
        entry["public_key"] = _text(raw_public)
        if private is not None:
            entry["key"] = _text(private.private_bytes_raw() + raw_public)
    elif name in _CURVES:
        pn = public.public_numbers()
        entry["ec_x"], entry["ec_y"] = pn.x, pn.y
        entry["public_key"] = public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode("ascii")
        if private is not None:
            entry["ec_d"] = private.private_numbers().private_value
    elif name.startswith("rsa-"):
        pn = public.public_numbers()
        if private is not None:
            sn = private.private_numbers()
            entry["rsa_key"] = {
                "N": pn.n,
                "E": pn.e,
                "D": sn.d,
                "Primes": [sn.p, sn.q],
                "Precomputed": {"Dp": sn.dmp1, "Dq": sn.dmq1, "Qinv": sn.iqmp, "CRTValues": []},
            }
        else:
            entry["rsa_public_key"] = {"N": pn.n, "E": pn.e}
    chain = material.extra.get("certificate_chain")
    if chain:
        certs = x509.load_pem_x509_certificates(chain.encode("ascii"))
        entry["certificate_chain"] = [_text(c.public_bytes(serialization.Encoding.DER)) for c in certs]
    return entry


def byok_target(key_type: KeyType, material: KeyMaterial) -> bytes:
    """What Vault's ``import``/``import_version`` expect inside the BYOK blob: raw bytes for symmetric and
    hmac keys, PKCS#8 DER for asymmetric ones (this service's stored form already)."""
    return key_type.byok_target(material)


# -- helpers --------------------------------------------------------------------------------------------------


def same_material(a: KeyMaterial, b: KeyMaterial) -> bool:
    """Whether two versions are the same key: private key (or public key alone) and HMAC key."""
    return a.key == b.key and a.hmac_key == b.hmac_key and a.public_key == b.public_key


def same_key(a: KeyMaterial, b: KeyMaterial) -> bool:
    """Whether two versions hold the same key, HMAC keys aside (byok-export carries none)."""
    return a.key == b.key and a.public_key == b.public_key


def _b64(text: str) -> bytes:
    return base64.b64decode(text, validate=True)


def _text(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _pkcs8(private: Any) -> bytes:
    return private.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _spki(public: Any) -> bytes:
    return public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
