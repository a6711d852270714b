"""RFC 3161 timestamp countersignatures in Notation envelopes (`io.cncf.notary.timestampSignature`):
a TimeStampToken over the envelope's signature value, verified with `rfc3161-client` against the
configured TSA roots. A verified token's genTime (with its accuracy) is the authentic signing time.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509

from scitt_oci.signatures.model import NotVerified

MAX_TOKEN_BYTES = 64 * 1024


@dataclass(frozen=True)
class Timestamp:
    time: dt.datetime
    accuracy: dt.timedelta

    @property
    def earliest(self) -> dt.datetime:
        return self.time - self.accuracy

    @property
    def latest(self) -> dt.datetime:
        return self.time + self.accuracy


def _tlv(data: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, content start, content length) of the DER item at `pos`; `ValueError` past the end."""
    if pos + 2 > len(data):
        raise ValueError("truncated")
    tag, first, pos = data[pos], data[pos + 1], pos + 2
    if first & 0x80:
        size = first & 0x7F
        if not 0 < size <= 4 or pos + size > len(data):
            raise ValueError("bad length")
        length, pos = int.from_bytes(data[pos : pos + size], "big"), pos + size
    else:
        length = first
    if pos + length > len(data):
        raise ValueError("truncated")
    return tag, pos, length


def _items(data: bytes) -> list[tuple[int, bytes]]:
    out, pos = [], 0
    while pos < len(data):
        tag, start, length = _tlv(data, pos)
        out.append((tag, data[start : start + length]))
        pos = start + length
    return out


def _encode(tag: int, content: bytes) -> bytes:
    n = len(content)
    if n < 0x80:
        return bytes([tag, n]) + content
    size = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([tag, 0x80 | len(size)]) + size + content


def _as_response(token: bytes) -> bytes:
    """The token as a granted TimeStampResp, its SignedData certificate set in DER order.

    Some TSAs (and notation-go's test tokens) list certificates out of DER SET order, which the
    DER parser refuses; that set is not covered by any signature, so ordering it changes nothing
    that is verified."""
    ((tag, content_info),) = _items(token)
    oid, wrapped = _items(content_info)
    if tag != 0x30 or wrapped[0] != 0xA0:
        raise ValueError("not a ContentInfo")
    ((sd_tag, signed_data),) = _items(wrapped[1])
    parts = []
    for part_tag, content in _items(signed_data):
        if part_tag == 0xA0:  # certificates [0] IMPLICIT SET OF
            content = b"".join(sorted(_encode(t, c) for t, c in _items(content)))
        parts.append(_encode(part_tag, content))
    normalised = _encode(0x30, _encode(oid[0], oid[1]) + _encode(0xA0, _encode(sd_tag, b"".join(parts))))
    granted = _encode(0x30, b"\x02\x01\x00")  # PKIStatusInfo { status granted }
    return _encode(0x30, granted + normalised)


def verify(token: bytes, signature: bytes, roots: Sequence[x509.Certificate]) -> Timestamp:
    """The authentic time `token` proves for `signature`, or `NotVerified` naming why not."""
    if not roots:
        raise NotVerified("no TSA roots are configured")
    if len(token) > MAX_TOKEN_BYTES:
        raise NotVerified(f"the timestamp token is larger than {MAX_TOKEN_BYTES} bytes")
    try:
        from rfc3161_client import VerificationError, VerifierBuilder, decode_timestamp_response
    except ImportError:
        raise NotVerified("timestamps need the rfc3161-client package") from None
    try:
        response = decode_timestamp_response(_as_response(token))
    except (ValueError, IndexError) as exc:
        raise NotVerified(f"the timestamp token cannot be read: {exc}") from None
    builder = VerifierBuilder()
    for root in roots:
        builder = builder.add_root_certificate(root)
    try:
        builder.build().verify_message(response, signature)
    except (VerificationError, ValueError) as exc:
        raise NotVerified(f"the timestamp does not verify: {exc}") from None
    info = response.tst_info
    accuracy = info.accuracy
    spread = (
        dt.timedelta(
            seconds=accuracy.seconds or 0, milliseconds=accuracy.millis or 0, microseconds=accuracy.micros or 0
        )
        if accuracy is not None
        else dt.timedelta(0)
    )
    when = info.gen_time if info.gen_time.tzinfo else info.gen_time.replace(tzinfo=dt.UTC)
    return Timestamp(when, spread)
