"""COSE_Sign1 (RFC 9052 section 4.2): encode, decode, sign and verify.

The protected header is kept as the exact bytes received, and the Sig_structure is built over
those bytes, never over a re-encoding of the decoded map.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cbor2

from scitt_oci.cose import algorithms, cbor, headers
from scitt_oci.cose.algorithms import Algorithm, PublicKey
from scitt_oci.cose.cbor import DEFAULT_LIMITS, Limits
from scitt_oci.cose.keys import CoseKey
from scitt_oci.errors import MalformedError, SignatureError, UnsupportedError

SIGN1_TAG = 18


_SIGNATURE1 = b"\x84\x6aSignature1"  # array(4), text(10) "Signature1"


def sig_structure(protected: bytes, payload: bytes, external_aad: bytes = b"") -> bytes:
    """The bytes a COSE_Sign1 signature covers: ["Signature1", protected, external_aad, payload]."""
    head = cbor.bstr_head
    return b"".join(
        (
            _SIGNATURE1,
            head(len(protected)),
            protected,
            head(len(external_aad)),
            external_aad,
            head(len(payload)),
            payload,
        )
    )


@dataclass(frozen=True)
class Sign1:
    """A decoded COSE_Sign1 message. `protected_bytes` is authoritative; `protected` is its decoding."""

    protected_bytes: bytes
    protected: dict[Any, Any]
    unprotected: dict[Any, Any]
    payload: bytes | None
    signature: bytes
    tagged: bool = True
    _encoded: bytes | None = field(default=None, compare=False, repr=False)

    @property
    def alg(self) -> Algorithm:
        if headers.ALG not in self.protected:
            raise MalformedError("protected header has no alg (1)")
        return algorithms.by_id(self.protected[headers.ALG])

    @property
    def kid(self) -> bytes | None:
        """The kid (4), protected header first; MalformedError if it is not a byte string (RFC 9052)."""
        kid = self.protected.get(headers.KID, self.unprotected.get(headers.KID))
        if kid is None or isinstance(kid, bytes):
            return kid
        kind = {str: "a text string", int: "an integer", bool: "a boolean", list: "an array", dict: "a map"}
        raise MalformedError(
            f"kid (4) must be a byte string (RFC 9052: kid is bstr), not {kind.get(type(kid), type(kid).__name__)} "
            f"{repr(kid)[:40]}; a text kid is carried as its UTF-8 bytes"
        )

    def encode(self, *, tagged: bool = True) -> bytes:
        """The message bytes; the protected header, payload and signature are reused as they are."""
        if self._encoded is not None and tagged == self.tagged:
            return self._encoded
        if not self.unprotected:  # the log entry form: encoded by hand, it is on every receipt check's path
            payload = b"\xf6" if self.payload is None else cbor.bstr(self.payload)
            body = b"\x84" + cbor.bstr(self.protected_bytes) + b"\xa0" + payload + cbor.bstr(self.signature)
            return (b"\xd2" + body) if tagged else body
        items = [self.protected_bytes, self.unprotected, self.payload, self.signature]
        return cbor.dumps(cbor2.CBORTag(SIGN1_TAG, items) if tagged else items)

    def with_unprotected(self, unprotected: dict[Any, Any]) -> Sign1:
        """The same message with another unprotected header (the signature still holds)."""
        return Sign1(self.protected_bytes, self.protected, unprotected, self.payload, self.signature)

    def to_be_signed(self, detached_payload: bytes | None = None) -> bytes:
        payload = self.payload if detached_payload is None else detached_payload
        if payload is None:
            raise MalformedError("payload is detached and none was supplied")
        if self.payload is not None and detached_payload is not None and detached_payload != self.payload:
            raise MalformedError("a detached payload was supplied but the message carries another one")
        return sig_structure(self.protected_bytes, payload)

    def verify(self, key: PublicKey | CoseKey, detached_payload: bytes | None = None) -> None:
        """Verify the signature with `key`; the algorithm comes from the protected header."""
        alg = self.alg
        if isinstance(key, CoseKey):  # a CoseKey was checked against its alg when it was made
            algorithms.verify(
                alg, key.public, self.signature, self.to_be_signed(detached_payload), key_checked=key.alg is alg
            )
        else:
            algorithms.verify(alg, key, self.signature, self.to_be_signed(detached_payload))


def _decode_header_map(raw: bytes, limits: Limits) -> dict[Any, Any]:
    if raw == b"":
        return {}
    value = cbor.loads(raw, limits)
    if not isinstance(value, dict):
        raise MalformedError(f"protected header must encode a map, not {type(value).__name__}")
    return value


def decode(
    data: bytes, limits: Limits = DEFAULT_LIMITS, *, require_tag: bool = False, unknown_critical: bool = False
) -> Sign1:
    """Decode a COSE_Sign1 message, tagged (18) or untagged; every failure is a `MalformedError`.

    A critical header we do not understand is an `UnsupportedError` (RFC 9052: such a message must
    not be processed), unless `unknown_critical` (to show it, never to verify it: see `unknown_critical`).
    """
    if not isinstance(data, bytes):
        data = bytes(data)
    parts = _plain_parts(data, limits)
    if parts is None:  # anything but the plain shape: the generic path, whose checks and messages are the rule
        return _decode_generic(data, limits, require_tag, unknown_critical)
    tagged, protected_bytes, payload, signature = parts
    if require_tag and not tagged:
        raise MalformedError("COSE_Sign1 message must carry tag 18")
    protected = _decode_header_map(protected_bytes, limits)
    _check_headers(protected, {}, unknown_critical)
    return Sign1(protected_bytes, protected, {}, payload, signature, tagged, data if tagged else None)


def _plain_parts(data: bytes, limits: Limits) -> tuple[bool, bytes, bytes | None, bytes] | None:
    """The parts of a message of the plain shape, read by hand; None for any other input.

    The plain shape: optional tag 18 (one byte, 0xd2), array(4) (0x84), a byte string, an empty map
    (0xa0), a byte string or nil, a byte string, and nothing after; every string's length in bounds.
    It is what a statement sent to register looks like. For such bytes `cbor.scan` finds nothing to
    refuse under limits that allow its size, six items and three levels, and `cbor2` decodes exactly
    these parts; anything else (another head, a short string, trailing bytes, tighter limits) goes to
    the generic path, so it meets today's checks in today's order.
    """
    n = len(data)
    if n > limits.max_bytes or limits.max_depth < 3 or limits.max_items < 6 or n < 5:
        return None
    pos = 0
    tagged = data[0] == 0xD2
    if tagged:
        pos = 1
    if data[pos] != 0x84:
        return None
    protected, pos = _bstr_at(data, pos + 1)
    if protected is None or pos >= n or data[pos] != 0xA0:
        return None
    pos += 1
    payload: bytes | None = None
    if pos < n and data[pos] == 0xF6:
        pos += 1
    else:
        payload, pos = _bstr_at(data, pos)
        if payload is None:
            return None
    signature, pos = _bstr_at(data, pos)
    if signature is None or pos != n:
        return None
    return tagged, protected, payload, signature


def _bstr_at(data: bytes, pos: int) -> tuple[bytes | None, int]:
    """The definite-length byte string at `pos` and the offset after it, or None when there is none whole."""
    n = len(data)
    if pos >= n:
        return None, pos
    initial = data[pos]
    if initial == 0x58 and pos + 1 < n:  # a length in one byte: most signatures, digests and headers
        start = pos + 2
        end = start + data[pos + 1]
    elif 0x40 <= initial < 0x58:
        start = pos + 1
        end = start + initial - 0x40
    elif 0x58 < initial <= 0x5B and (start := pos + 1 + (1 << (initial - 0x58))) <= n:
        end = start + int.from_bytes(data[pos + 1 : start], "big")
    else:
        return None, pos
    if end > n:
        return None, pos
    return data[start:end], end


def _decode_generic(data: bytes, limits: Limits, require_tag: bool, unknown_critical: bool) -> Sign1:
    """`decode` for any input: the whole message scanned and decoded, then its shape checked."""
    value = cbor.loads(data, limits)
    tagged = False
    if isinstance(value, cbor2.CBORTag):
        if value.tag != SIGN1_TAG:
            raise MalformedError(f"CBOR tag {value.tag} is not COSE_Sign1 (18)")
        value = value.value
        tagged = True
    elif require_tag:
        raise MalformedError("COSE_Sign1 message must carry tag 18")
    if not isinstance(value, list) or len(value) != 4:
        raise MalformedError("COSE_Sign1 must be an array of 4 items [protected, unprotected, payload, signature]")
    protected_bytes, unprotected, payload, signature = value
    if not isinstance(protected_bytes, bytes):
        raise MalformedError("COSE_Sign1 protected header must be a byte string")
    if not isinstance(unprotected, dict):
        raise MalformedError("COSE_Sign1 unprotected header must be a map")
    if payload is not None and not isinstance(payload, bytes):
        raise MalformedError("COSE_Sign1 payload must be a byte string or nil")
    if not isinstance(signature, bytes):
        raise MalformedError("COSE_Sign1 signature must be a byte string")
    protected = _decode_header_map(protected_bytes, limits)
    _check_headers(protected, unprotected, unknown_critical)
    return Sign1(protected_bytes, protected, unprotected, payload, signature, tagged, data if tagged else None)


def unknown_critical(protected: dict[Any, Any]) -> list[int | str]:
    """The labels a (decoded) protected header marks critical that we do not understand."""
    crit = protected.get(headers.CRIT)
    if not isinstance(crit, list):
        return []
    return [c for c in crit if (type(c) is int or type(c) is str) and c not in headers.UNDERSTOOD]


def _check_headers(protected: dict[Any, Any], unprotected: dict[Any, Any], allow_unknown: bool = False) -> None:
    for header_map in (protected, unprotected):
        for label in header_map:
            if type(label) is not int and type(label) is not str:
                raise MalformedError(f"header label {label!r} must be an integer or text string")
    both = unprotected and protected.keys() & unprotected.keys()
    if both:
        raise MalformedError(
            f"header labels {sorted(map(str, both))} appear in both the protected and unprotected headers"
        )
    if unprotected and headers.CRIT in unprotected:
        raise MalformedError("crit (2) must be in the protected header (RFC 9052 section 3.1), not the unprotected one")
    crit = protected.get(headers.CRIT)
    if crit is not None:
        if not isinstance(crit, list) or not crit:
            raise MalformedError("crit (2) must be a non-empty array of labels")
        for label in crit:
            if type(label) is not int and type(label) is not str:
                raise MalformedError(
                    f"crit (2) must list header labels (integers or text strings), not {type(label).__name__} values"
                )
        unknown = unknown_critical(protected)
        if unknown and not allow_unknown:
            raise UnsupportedError(f"critical header labels {unknown} are not understood")
        missing = [c for c in crit if c not in protected]
        if missing:
            raise MalformedError(f"critical header labels {missing} are not in the protected header")


def sign(
    key: CoseKey,
    protected: dict[Any, Any],
    payload: bytes | None,
    *,
    unprotected: dict[Any, Any] | None = None,
    detached_payload: bytes | None = None,
) -> Sign1:
    """Sign a new COSE_Sign1. `alg` and `kid` are filled from `key` when absent.

    For a detached payload pass `payload=None` and the bytes as `detached_payload`.
    """
    if key.private is None:
        raise SignatureError(f"key {key.kid.hex()} has no private half; it cannot sign")
    alg = key.alg
    if headers.ALG in protected:
        alg = algorithms.by_id(protected[headers.ALG])
    if alg is None:
        raise UnsupportedError("no signature algorithm given for this key")
    header = {headers.ALG: alg.cose_id, **protected}
    protected_bytes = cbor.dumps(header)
    signed_payload = payload if payload is not None else detached_payload
    if signed_payload is None:
        raise MalformedError("nothing to sign: payload and detached_payload are both absent")
    signature = algorithms.sign(alg, key.private, sig_structure(protected_bytes, signed_payload))
    return Sign1(protected_bytes, header, dict(unprotected or {}), payload, signature)
