"""Transparent Statements (RFC 9943 section 7): a Signed Statement with Receipts under 394.

We emit each receipt bstr-wrapped, as RFC 9942's CDDL says; we read both that and the unwrapped
form the architecture's CDDL file shows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cbor2

from scitt_oci.cose import cbor, headers
from scitt_oci.cose.cbor import DEFAULT_LIMITS, Limits
from scitt_oci.errors import MalformedError
from scitt_oci.scitt import statement as statement_mod
from scitt_oci.scitt.statement import SignedStatement

MAX_RECEIPTS = 32


@dataclass(frozen=True)
class TransparentStatement:
    statement: SignedStatement
    receipts: tuple[bytes, ...]


def add_receipts(signed: SignedStatement, receipts: Sequence[bytes]) -> bytes:
    """The Transparent Statement: `signed` with `receipts` appended to any it already carries (no duplicates)."""
    existing = list(_receipts_in(signed.message.unprotected))
    for r in receipts:
        if r not in existing:
            existing.append(bytes(r))
    if len(existing) > MAX_RECEIPTS:
        raise MalformedError(f"a Transparent Statement may carry at most {MAX_RECEIPTS} receipts")
    unprotected = dict(signed.message.unprotected)
    unprotected[headers.RECEIPTS] = existing
    return signed.message.with_unprotected(unprotected).encode()


def _receipts_in(unprotected: dict[object, object]) -> list[bytes]:
    raw = unprotected.get(headers.RECEIPTS)
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise MalformedError("receipts (394) must be an array")
    if len(raw) > MAX_RECEIPTS:
        raise MalformedError(f"receipts (394) holds {len(raw)} receipts; at most {MAX_RECEIPTS} are accepted")
    out = []
    for item in raw:
        if isinstance(item, bytes):
            out.append(item)
        elif isinstance(item, (cbor2.CBORTag, list)):  # an unwrapped receipt: re-encode it to verify
            out.append(cbor.dumps(item))
        else:
            raise MalformedError("each receipt in 394 must be a byte string or a COSE_Sign1")
    return out


def parse(data: bytes, limits: Limits = DEFAULT_LIMITS, *, unknown_critical: bool = False) -> TransparentStatement:
    """Split a Transparent Statement (or a bare Signed Statement) into the statement and its receipts
    (`unknown_critical`: see `statement.parse`)."""
    signed = statement_mod.parse(data, limits, unknown_critical=unknown_critical)
    return TransparentStatement(signed, tuple(_receipts_in(signed.message.unprotected)))
