"""Unpadded base64url, decoded strictly: only the one canonical text of some bytes decodes."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from scitt_oci import b64url


@given(st.binary(max_size=200))
def test_round_trip(data: bytes) -> None:
    text = b64url.encode(data)
    assert "=" not in text and "+" not in text and "/" not in text
    assert b64url.decode(text) == data


@pytest.mark.parametrize(
    "text",
    [
        "AQAB==",  # padding
        "AQ!AB",  # a character outside the alphabet (a lax decoder drops it)
        "AQ AB",  # whitespace
        "A+/B",  # the standard alphabet's characters
        "AQB",  # stray bits: "AQA" is the text of b"\x01\x00", a lax decoder reads "AQB" as the same bytes
        "A",  # a length no encoding has
    ],
)
def test_anything_but_the_canonical_text_is_refused(text: str) -> None:
    with pytest.raises(ValueError):
        b64url.decode(text)
