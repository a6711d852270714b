"""Unpadded base64url (RFC 4648 section 5, as JOSE and did:x509 use it), decoded strictly.

`base64.urlsafe_b64decode` drops characters outside the alphabet and ignores stray bits, so that many
texts decode to the same bytes; here only the one canonical text of some bytes decodes, anything else is
a `ValueError`."""

from __future__ import annotations

import base64
import binascii


def encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def decode(text: str) -> bytes:
    """The bytes whose unpadded base64url text is exactly `text`; `ValueError` for anything else
    (padding, characters outside A-Z a-z 0-9 - _, non-zero trailing bits, an impossible length)."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("not base64url") from None
    if encode(raw) != text:
        raise ValueError("not canonical unpadded base64url")
    return raw
