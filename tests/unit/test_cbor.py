"""Bounded decoding: limits, strictness, and random or mutated input never raising anything but our errors."""

from __future__ import annotations

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scitt_oci.cose import cbor
from scitt_oci.cose.cbor import Limits
from scitt_oci.errors import LimitExceededError, MalformedError


def test_round_trip_of_ordinary_values() -> None:
    value = {1: -7, 4: b"kid", 15: {1: "iss", 2: "sub"}, "x": [1, 2, None, True, 1.5]}
    assert cbor.loads(cbor.dumps(value)) == value


def test_trailing_bytes_are_refused() -> None:
    with pytest.raises(MalformedError, match="1 trailing bytes"):
        cbor.loads(b"\x01\x02")


def test_duplicate_map_keys_are_refused() -> None:
    with pytest.raises(MalformedError, match="duplicate map key"):
        cbor.loads(bytes.fromhex("a2 01 26 01 27".replace(" ", "")))


def test_nesting_beyond_the_limit_is_refused() -> None:
    with pytest.raises(LimitExceededError, match="nesting deeper than 16"):
        cbor.loads(b"\x81" * 17 + b"\x00")
    assert cbor.loads(b"\x81" * 15 + b"\x00") is not None


def test_size_and_item_limits() -> None:
    with pytest.raises(LimitExceededError, match="is 11 bytes; the limit is 10"):
        cbor.loads(cbor.dumps(b"x" * 10), Limits(max_bytes=10))
    with pytest.raises(LimitExceededError, match="more than 5 items"):
        cbor.loads(cbor.dumps(list(range(10))), Limits(max_items=5))


def test_declared_lengths_larger_than_the_input_fail_fast() -> None:
    with pytest.raises(MalformedError, match="declares"):
        cbor.loads(b"\x5b\x00\x00\x00\xff\xff\xff\xff\xff")
    with pytest.raises(MalformedError, match="declares more items"):
        cbor.loads(b"\x9b\x00\x00\x00\xff\xff\xff\xff\xff")


def test_indefinite_length_and_reserved_encodings_are_refused() -> None:
    with pytest.raises(MalformedError, match="indefinite-length"):
        cbor.loads(b"\x9f\x01\xff")
    with pytest.raises(MalformedError, match="reserved additional information"):
        cbor.loads(b"\x1c")
    with pytest.raises(MalformedError, match="empty"):
        cbor.loads(b"")


def test_semantic_errors_inside_cbor2_become_ours() -> None:
    # tag 1 (epoch date) with a value no datetime can hold
    with pytest.raises(MalformedError):
        cbor.loads(b"\xc1\x1b\xff\xff\xff\xff\xff\xff\xff\xff")


def test_non_bytes_input_is_a_clear_error() -> None:
    with pytest.raises(MalformedError, match="must be bytes"):
        cbor.loads("text")  # type: ignore[arg-type]


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_raise_only_malformed(data: bytes) -> None:
    try:
        cbor.loads(data)
    except MalformedError:
        pass


_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**64), 2**64) | st.binary(max_size=40) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.integers(-50, 50) | st.text(max_size=5), children, max_size=5),
    max_leaves=30,
)


@settings(max_examples=1000, deadline=None)
@given(_values, st.data())
def test_scan_agrees_with_cbor2_on_valid_encodings_and_survives_mutation(value: object, data: st.DataObject) -> None:
    encoded = cbor2.dumps(value)
    assert cbor.loads(encoded, Limits(max_depth=64)) == value
    mutated = bytearray(encoded)
    position = data.draw(st.integers(0, len(mutated) - 1))
    mutated[position] = data.draw(st.integers(0, 255))
    try:
        cbor.loads(bytes(mutated))
    except MalformedError:
        pass
