"""JSON from outside (webhooks, admission requests, registries), decoded with limits.

A size limit applies before parsing; nesting deep enough to exhaust the decoder's recursion becomes
a `LimitExceededError` instead of a `RecursionError` escaping as a stack trace.
"""

from __future__ import annotations

import json
import re
from typing import Any

from scitt_oci.errors import LimitExceededError, MalformedError

_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")  # \ud800-\udfff: half of a UTF-16 pair, or alone


def load(data: bytes, what: str, limit: int) -> Any:
    """Decode `data`, naming it `what` in errors; at most `limit` bytes. Strings must be Unicode text:
    an escaped UTF-16 surrogate without its pair (`"\\ud800"`) is refused, as I-JSON (RFC 7493) does;
    Python's decoder would make it a string that cannot be stored, hashed or printed as UTF-8."""
    if len(data) > limit:
        raise LimitExceededError(f"{what} is {len(data)} bytes; at most {limit} are accepted")
    try:
        # UTF-8 only (RFC 8259), decoded strictly: given bytes, json.loads would also take UTF-16 and UTF-32,
        # and would let UTF-8-encoded surrogates through ("surrogatepass"). A leading BOM is ignored.
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise MalformedError(f"{what} is not JSON: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    try:
        doc = json.loads(text, parse_constant=_not_json)
    except RecursionError:
        raise LimitExceededError(f"{what} nests JSON arrays or objects too deeply") from None
    except ValueError as exc:
        raise MalformedError(f"{what} is not JSON: {exc}") from None
    if _SURROGATE_ESCAPE.search(data):  # rare: only then is every string looked at
        _unicode_only(doc, what)
    return doc


def _unicode_only(doc: Any, what: str) -> None:
    stack = [doc]
    while stack:
        value = stack.pop()
        if isinstance(value, dict):
            stack += value.keys()
            stack += value.values()
        elif isinstance(value, list):
            stack += value
        elif isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as exc:
                lone = ord(value[exc.start])
                raise MalformedError(
                    f"{what} holds a lone UTF-16 surrogate (\\u{lone:04x}): JSON strings must be Unicode text"
                ) from None


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")  # Python's decoder takes NaN and Infinity; JSON has neither


def load_object(data: bytes, what: str, limit: int) -> dict[str, Any]:
    """`load`, requiring a JSON object."""
    doc = load(data, what, limit)
    if not isinstance(doc, dict):
        raise MalformedError(f"{what} must be a JSON object, not {type(doc).__name__}")
    return doc
