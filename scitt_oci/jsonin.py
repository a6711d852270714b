"""JSON from outside (webhooks, admission requests, registries), decoded with limits.

A size limit applies before parsing; nesting deep enough to exhaust the decoder's recursion becomes
a `LimitExceededError` instead of a `RecursionError` escaping as a stack trace.
"""

from __future__ import annotations

import json
from typing import Any

from scitt_oci.errors import LimitExceededError, MalformedError


def load(data: bytes, what: str, limit: int) -> Any:
    """Decode `data`, naming it `what` in errors; at most `limit` bytes."""
    if len(data) > limit:
        raise LimitExceededError(f"{what} is {len(data)} bytes; at most {limit} are accepted")
    try:
        return json.loads(data, parse_constant=_not_json)
    except RecursionError:
        raise LimitExceededError(f"{what} nests JSON arrays or objects too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedError(f"{what} is not JSON: {exc}") from None


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value")  # Python's decoder takes NaN and Infinity; JSON has neither


def load_object(data: bytes, what: str, limit: int) -> dict[str, Any]:
    """`load`, requiring a JSON object."""
    doc = load(data, what, limit)
    if not isinstance(doc, dict):
        raise MalformedError(f"{what} must be a JSON object, not {type(doc).__name__}")
    return doc
