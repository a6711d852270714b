"""Every parser of outside JSON goes through `jsonin`: size, depth and syntax fail as MalformedError."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from scitt_oci import jsonin
from scitt_oci.errors import LimitExceededError, MalformedError
from scitt_oci.oci import manifest
from scitt_oci.verify import admission
from scitt_oci.watch import events

PARSERS: dict[str, Callable[[bytes], Any]] = {
    "webhook payload": lambda b: events.parse_generic(b, {}),
    "manifest": manifest.parse,
    "AdmissionReview": admission.parse_review,
    "ProviderRequest": admission.parse_provider_request,
}


@pytest.mark.parametrize("name", PARSERS)
def test_nesting_too_deep_for_the_decoder_is_a_limit_error(name: str) -> None:
    with pytest.raises(LimitExceededError, match="too deeply"):
        PARSERS[name](b"[" * 100_000 + b"]" * 100_000)


@pytest.mark.parametrize("name", PARSERS)
def test_bytes_that_are_not_utf8_json_are_malformed(name: str) -> None:
    with pytest.raises(MalformedError, match="is not JSON"):
        PARSERS[name](b"\xff\xfe{")


def test_size_limit_applies_before_decoding_and_objects_are_required() -> None:
    with pytest.raises(LimitExceededError, match="thing is 11 bytes; at most 10"):
        jsonin.load(b'"123456789"', "thing", 10)
    assert jsonin.load_object(b'{"a": [1]}', "thing", 100) == {"a": [1]}
    with pytest.raises(MalformedError, match="thing must be a JSON object, not list"):
        jsonin.load_object(b"[1]", "thing", 100)


@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity"])
def test_nan_and_infinity_are_not_json(constant: bytes) -> None:
    with pytest.raises(MalformedError, match=f"is not JSON: {constant.decode()} is not a JSON value"):
        jsonin.load(b'{"a": ' + constant + b"}", "thing", 100)


@pytest.mark.parametrize(
    ("body", "lone"),
    [
        (rb'{"id": "\ud800"}', "d800"),
        (rb'{"a": ["ok", {"b": "x\uDFFFy"}]}', "dfff"),
        (rb'{"\udbff": 1}', "dbff"),  # a key
        (rb'{"a": "\ude00\ud83d"}', "de00"),  # a pair in the wrong order
    ],
)
def test_a_lone_utf16_surrogate_is_not_text(body: bytes, lone: str) -> None:
    """Python decodes "\\ud800" into a string no UTF-8 encoder takes (an inbox, a log line, a hash):
    refused as I-JSON does, naming it; a well-formed pair is an ordinary character."""
    with pytest.raises(MalformedError, match=rf"thing holds a lone UTF-16 surrogate \(\\u{lone}\)"):
        jsonin.load(body, "thing", 100)
    assert jsonin.load(rb'{"a": "\ud83d\ude00", "b": "\\ud800"}', "thing", 100) == {"a": "\U0001f600", "b": "\\ud800"}


@pytest.mark.parametrize("name", PARSERS)
@pytest.mark.parametrize(
    "body",
    [
        b'{"id": "\xed\xa0\x80"}',  # a surrogate encoded as UTF-8 bytes (no valid UTF-8 holds one)
        b'{"id": "\xed\xa0\xbd\xed\xb8\x80"}',  # a surrogate pair so encoded (CESU-8)
        '{"id": "x"}'.encode("utf-16"),  # JSON exchanged between systems is UTF-8 (RFC 8259)
    ],
    ids=["raw-surrogate", "cesu-8-pair", "utf-16"],
)
def test_json_that_is_not_utf8_is_refused_by_every_parser(name: str, body: bytes) -> None:
    """Given bytes, Python's decoder takes UTF-16 and UTF-32 too, and lets surrogates through as UTF-8."""
    with pytest.raises(MalformedError, match=r"is not JSON: not UTF-8 \("):
        PARSERS[name](body)


def test_a_leading_utf8_byte_order_mark_is_ignored() -> None:
    assert jsonin.load(b'\xef\xbb\xbf{"a": 1}', "thing", 100) == {"a": 1}
