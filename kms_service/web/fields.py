"""Strict request parsing. Python's parsers are lax; these are not.

Bodies are read as Vault reads them: JSON, unless the Content-Type is a form
(``application/x-www-form-urlencoded``) and the body does not start like JSON (``{`` or ``[``), as curl
``--data '{...}'`` sends; then a form, every value a string. Empty or ``null`` JSON is no fields.
JSON: no duplicate keys, no NaN/Infinity, no lone surrogates, an object at the top, and ``JsonLimits``
(Vault's listener limits): depth, string length, entries per object or array, and values per body. The
values are bounded before parsing, by counting ``[{,:`` in the raw bytes (C speed; a string holding those
bytes counts them too, so the bound errs on the safe side): the parse of any accepted body is bounded.
Forms: Go's ``url.ParseQuery`` rules and limits (``&`` only, strict ``%XX``, 10,000 pairs, 10 MiB), plus no
duplicate keys (Vault joins them with commas) and UTF-8 only.
Values: base64 is validated, integers are ASCII digits (Vault's weak typing accepts "2" for 2; we do too,
but never ``true`` or ``1.5``), booleans are true/false. Error messages name the field, never its value.
The path schemas (``web.framework.Field``) pick a parser per field type.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_to_bytes

from kms_service.errors import InvalidRequest
from kms_service.keyring import b64decode_strict
from kms_service.settings import DEFAULTS

MAX_DEPTH = DEFAULTS.max_json_depth
MAX_STRING_LENGTH = DEFAULTS.max_json_string_length
MAX_ENTRIES = DEFAULTS.max_json_entries
MAX_TOKENS = DEFAULTS.max_json_tokens
MAX_LISTED_NAMES = 20
_INT_RE = re.compile(r"-?[0-9]{1,10}", re.ASCII)
_TRUE = {"1", "t", "T", "true", "TRUE", "True"}
_FALSE = {"0", "f", "F", "false", "FALSE", "False"}

FORM_MEDIA_TYPE = "application/x-www-form-urlencoded"
# Vault looks this far into a form-typed body for the start of JSON.
FORM_SNIFF_BYTES = 512
# Go's net/http and net/url limits, which Vault's forms inherit (both answer "error parsing form data").
MAX_FORM_BYTES = 10 * 1024 * 1024
MAX_FORM_PAIRS = 10_000
FORM_ERROR = "error parsing form data"
_BAD_ESCAPE_RE = re.compile(rb"%(?![0-9A-Fa-f]{2})")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise InvalidRequest("failed to decode JSON input: duplicate key in object")
        result[key] = value
    return result


def _reject_constant(_name: str) -> Any:
    raise InvalidRequest("failed to decode JSON input: NaN and Infinity are not JSON")


@dataclass(frozen=True)
class JsonLimits:
    """What one JSON body may hold. ``entries`` bounds every object and array except the top-level
    ``batch_input``, which ``--max-batch-items`` bounds (with its own message)."""

    depth: int = MAX_DEPTH
    string_length: int = MAX_STRING_LENGTH
    entries: int = MAX_ENTRIES
    tokens: int = MAX_TOKENS


DEFAULT_LIMITS = JsonLimits()


def token_bound(raw: bytes) -> int:
    """An upper bound of the values (and object keys) in a JSON text, at C speed: each one is the first of
    its container or follows a ``,`` or a ``:``."""
    return 1 + raw.count(b"[") + raw.count(b"{") + raw.count(b",") + raw.count(b":")


_TOO_DEEP = "failed to decode JSON input: nested too deeply"


def _too_many_entries(what: str, limits: JsonLimits) -> str:
    """``what`` is "an object" or "an array": failed to decode JSON input: an object has more than N entries."""
    return f"failed to decode JSON input: {what} has more than {limits.entries} entries"


def _check(value: Any, depth: int, limits: JsonLimits, batch_input: bool = False, strings: bool = True) -> None:
    """Depth, entries and (``strings``) each string's length and encodability, in the whole document."""
    if depth > limits.depth:
        raise InvalidRequest(_TOO_DEEP)
    if isinstance(value, str):
        if not strings:
            return
        if len(value) > limits.string_length:
            raise InvalidRequest(
                f"failed to decode JSON input: a string is longer than {limits.string_length} characters"
            )
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidRequest("failed to decode JSON input: invalid unicode escape") from None
    elif isinstance(value, dict):
        if len(value) > limits.entries:
            raise InvalidRequest(_too_many_entries("an object", limits))
        if value and depth + 1 > limits.depth:  # its entries, leaves included, are too deep (leaves are not walked)
            raise InvalidRequest(_TOO_DEEP)
        for key, item in value.items():
            if strings:
                _check(key, depth + 1, limits)
            if isinstance(item, (dict, list)) or strings:
                _check(item, depth + 1, limits, depth == 0 and key == "batch_input", strings)
    elif isinstance(value, list):
        if len(value) > limits.entries and not batch_input:
            raise InvalidRequest(_too_many_entries("an array", limits))
        if value and depth + 1 > limits.depth:
            raise InvalidRequest(_TOO_DEEP)
        if strings:
            for item in value:
                _check(item, depth + 1, limits, False, True)
            return
        for item in value:
            if type(item) is dict:  # batch_input's items, inline: what _check(item, depth + 1) does to them
                if len(item) > limits.entries:
                    raise InvalidRequest(_too_many_entries("an object", limits))
                if item and depth + 2 > limits.depth:
                    raise InvalidRequest(_TOO_DEEP)
                for inner in item.values():
                    if isinstance(inner, (dict, list)):
                        _check(inner, depth + 2, limits, False, False)
            elif isinstance(item, (dict, list)):
                _check(item, depth + 1, limits, False, False)


def too_many_tokens(limit: int) -> str:
    return f"failed to decode JSON input: more than {limit} values"


def parse_body(
    raw: bytes, content_type: str | None = None, limits: JsonLimits = DEFAULT_LIMITS, tokens: int | None = None
) -> dict[str, Any]:
    """The request body's fields: a form (see ``is_form``) or a JSON object; no body, or JSON ``null``, is
    no fields. ``tokens``: ``token_bound(raw)`` if the caller counted it already."""
    if content_type and is_form(raw, content_type):
        return parse_form(raw)
    if not raw.strip():
        return {}
    if (token_bound(raw) if tokens is None else tokens) > limits.tokens:
        raise InvalidRequest(too_many_tokens(limits.tokens))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequest("failed to decode JSON input: body is not UTF-8") from None
    try:
        if text.startswith("\ufeff"):  # what json.loads checks before decoding
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
        document = _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        raise InvalidRequest(
            f"failed to decode JSON input: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from None
    except (ValueError, RecursionError):
        raise InvalidRequest("failed to decode JSON input: value out of range or nested too deeply") from None
    if document is None:  # Go decodes null into a map as no map: the Vault CLI's `write -f` sends it
        return {}
    if not isinstance(document, dict):
        raise InvalidRequest("failed to decode JSON input: expected a JSON object")
    # A string can only be too long if the body is, and can only hold a lone surrogate (which UTF-8 cannot
    # encode) through a \u escape: without either, only the containers are walked, not every string.
    _check(document, 0, limits, strings=len(raw) > limits.string_length or b"\\u" in raw)
    return document


# One decoder for every body (json.loads would build one per call).
_DECODER = json.JSONDecoder(object_pairs_hook=_no_duplicates, parse_constant=_reject_constant)


def is_form_type(content_type: str | None) -> bool:
    return content_type is not None and content_type.partition(";")[0].strip().lower() == FORM_MEDIA_TYPE


def is_form(raw: bytes, content_type: str) -> bool:
    """Vault's rule: a form when the media type is a form and the first non-blank byte of the body's first
    512 is not ``{`` or ``[`` (an empty or blank body under a form type is an empty form)."""
    if not is_form_type(content_type):
        return False
    head = raw[:FORM_SNIFF_BYTES].lstrip(b" \t\r\n")
    return head[:1] not in (b"{", b"[")


def parse_form(raw: bytes) -> dict[str, str]:
    """A form body as Go's ``url.ParseQuery`` reads it (pairs split on ``&``, ``+`` is a space, ``%XX``
    escapes; a pair without ``=`` is a key with an empty value), one string value per key."""
    if len(raw) > MAX_FORM_BYTES or raw.count(b"&") >= MAX_FORM_PAIRS:
        raise InvalidRequest(FORM_ERROR)
    fields: dict[str, str] = {}
    for pair in raw.split(b"&"):
        if not pair:
            continue
        if b";" in pair or _BAD_ESCAPE_RE.search(pair):
            raise InvalidRequest(FORM_ERROR)
        key, _, value = pair.partition(b"=")
        try:
            name = unquote_to_bytes(key.replace(b"+", b" ")).decode("utf-8")
            text = unquote_to_bytes(value.replace(b"+", b" ")).decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidRequest(f"{FORM_ERROR}: not UTF-8") from None
        if name in fields:
            raise InvalidRequest(f"{FORM_ERROR}: duplicate key")
        fields[name] = text
    return fields


class FieldTypeError(InvalidRequest):
    """A value of the wrong JSON type, or one that does not convert (``true`` for an integer). In a batch item
    this fails the whole request (Vault's "failed to parse batch input"); ``detail`` is the text without the
    field's name."""

    def __init__(self, message: str, detail: str) -> None:
        super().__init__(message)
        self.detail = detail


def parse_string(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise FieldTypeError(f"field '{name}' must be a string", "must be a string")
    return value


def parse_base64(name: str, value: Any) -> bytes:
    if not isinstance(value, str):
        raise FieldTypeError(f"field '{name}' must be a string", "must be a string")  # as parse_string
    try:
        return b64decode_strict(value)
    except ValueError:
        raise InvalidRequest(f"illegal base64 data in field '{name}'") from None


def parse_integer(name: str, value: Any) -> int:
    if type(value) is int and abs(value) < 2**31:
        return value
    if isinstance(value, str) and _INT_RE.fullmatch(value) and abs(int(value)) < 2**31:
        return int(value)
    raise FieldTypeError(f"error converting input for field '{name}': expected an integer", "expected an integer")


def parse_go_bool(value: str) -> bool:
    """Go's ``strconv.ParseBool`` (1, t, T, TRUE, true, True and their false counterparts); ValueError
    otherwise."""
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError("not a boolean")


def parse_boolean(name: str, value: Any) -> bool:
    if type(value) is bool:
        return value
    if isinstance(value, str) and value in _TRUE:
        return True
    if isinstance(value, str) and value in _FALSE:
        return False
    raise FieldTypeError(f"error converting input for field '{name}': expected a boolean", "expected a boolean")


def parse_list(name: str, value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise FieldTypeError(f"field '{name}' must be a list", "must be a list")
    return value


def parse_comma_list(name: str, value: Any) -> list[str]:
    """Vault's comma-string slice: ["a", "b"], or "a,b" (each item split at commas too, trimmed, empty ones
    dropped)."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        raise FieldTypeError(f"field '{name}' must be a list of strings", "must be a list of strings")
    return [part.strip() for item in items for part in item.split(",") if part.strip()]


def parse_map(name: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise FieldTypeError(f"field '{name}' must be an object", "must be an object")
    return value


def ignored_field_warnings(body: dict[str, Any], known: frozenset[str], path_params: dict[str, str]) -> list[str]:
    """Vault's warnings for body fields it ignored (not in the path's schema) or overrode with path values."""
    if body.keys() <= known and (not path_params or path_params.keys().isdisjoint(body)):
        return []  # every field known, none from the path: nearly every request
    result = []
    replaced = sorted(k for k in body if k in path_params)
    ignored = sorted(_short(k) for k in body if k not in known and k not in path_params)
    if len(ignored) > MAX_LISTED_NAMES:
        ignored = ignored[:MAX_LISTED_NAMES] + ["..."]
    if ignored:
        result.append(f"Endpoint ignored these unrecognized parameters: [{' '.join(ignored)}]")
    if replaced:
        result.append(
            "Endpoint replaced the value of these parameters with the values captured from the "
            f"endpoint's path: [{' '.join(replaced)}]"
        )
    return result


def _short(name: str) -> str:
    return name if len(name) <= 64 else name[:61] + "..."
