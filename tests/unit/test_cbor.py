"""Bounded decoding: limits, strictness, and random or mutated input never raising anything but our errors."""

from __future__ import annotations

import io
import random
import time
from collections.abc import Callable
from functools import partial

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scitt_oci.cose import cbor, sign1
from scitt_oci.cose.cbor import Limits
from scitt_oci.errors import LimitExceededError, MalformedError
from tests import helpers
from tests.helpers import cbor_bomb


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
        cbor.loads("text")  # type: ignore[arg-type]  # a str where bytes belong, on purpose


@settings(max_examples=2000, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_raise_only_malformed(data: bytes) -> None:
    try:
        cbor.loads(data)
    except MalformedError:
        pass


_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**64), 2**64) | st.binary(max_size=40) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.integers(-50, 50) | st.text(max_size=5), children, max_size=5)
    ),
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


@pytest.mark.parametrize("size", [229, 1024])
@pytest.mark.parametrize("as_sign1", [False, True])
def test_value_sharing_bomb_is_refused_before_any_decoding(size: int, as_sign1: bool) -> None:
    # `28([29(i-1), 29(i-1)])` per level: the old decoder re-encoded it to test canonical form and
    # took 29 s on the 229-byte bomb (every 9 more bytes doubled that); the scan refuses it at tag 28.
    data = cbor_bomb(size, sign1=as_sign1)
    assert len(data) == size
    started = time.perf_counter()
    with pytest.raises(MalformedError, match=r"tag 28 \(shareable value\) at offset \d+ is not accepted"):
        cbor.loads(data)
    with pytest.raises(MalformedError, match="tag 28"):
        sign1.decode(data)
    assert time.perf_counter() - started < 0.1


@pytest.mark.parametrize(
    ("hexdata", "tag"),
    [
        ("d81d00", 29),  # shared value reference
        ("d81900", 25),  # string reference
        ("d90100 80", 256),  # string reference namespace
        ("d9001c 00", 28),  # tag 28 in a longer (non-preferred) encoding
        ("c5 82 1b00000000ffffffff 01", 5),  # bigfloat: 1 * 2**(2**32 - 1)
        ("c4 82 01 01", 4),  # decimal fraction
        ("d81e 82 01 02", 30),  # rational
        ("d823 62 612a", 35),  # regular expression
        ("d824 60", 36),  # MIME message
    ],
)
def test_tags_with_non_linear_meanings_are_refused(hexdata: str, tag: int) -> None:
    with pytest.raises(MalformedError, match=f"tag {tag} "):
        cbor.loads(bytes.fromhex(hexdata.replace(" ", "")))
    # also nested inside an ordinary structure
    with pytest.raises(MalformedError, match=f"tag {tag} "):
        cbor.loads(bytes.fromhex("a1 01 81".replace(" ", "") + hexdata.replace(" ", "")))


def test_bignums_are_bounded() -> None:
    assert cbor.loads(cbor2.dumps(2**64)) == 2**64
    assert cbor.loads(cbor2.dumps(-(2**127))) == -(2**127)
    with pytest.raises(MalformedError, match="bignum at offset 1 must be a byte string of at most 16 bytes"):
        cbor.loads(cbor2.dumps(2**200))
    with pytest.raises(MalformedError, match="bignum at offset 1 must be a byte string"):
        cbor.loads(b"\xc2\x01")


def test_indefinite_lengths_are_refused_everywhere() -> None:
    for hexdata in ("5f 41 00 ff", "7f 61 61 ff", "bf 01 02 ff", "81 9f ff", "ff"):
        with pytest.raises(MalformedError, match="indefinite-length|unexpected break"):
            cbor.loads(bytes.fromhex(hexdata.replace(" ", "")))


def test_an_indefinite_length_cose_sign1_is_refused() -> None:
    # 18([_ h'a10126', {}, h'..', h'..']): cbor2 alone accepted it, and POST /entries answered 201
    message = sign1.sign(helpers.key(), {}, b"payload")
    definite = message.encode()
    assert definite[:2] == b"\xd2\x84"
    with pytest.raises(MalformedError, match="indefinite-length item at offset 1"):
        sign1.decode(b"\xd2\x9f" + definite[2:] + b"\xff")


def test_map_keys_that_decode_equal_are_duplicates() -> None:
    # 1 and 1 in a longer encoding; "a" twice; keys that are not integers or strings (1.0, true) would
    # collide with 1 in a Python dict, so they are refused outright
    for hexdata in ("a2 01 00 1801 00", "a2 6161 00 780161 00"):
        with pytest.raises(MalformedError, match="duplicate map key"):
            cbor.loads(bytes.fromhex(hexdata.replace(" ", "")))
    for hexdata in ("a2 01 00 f93c00 00", "a2 01 00 f5 00", "a1 80 00", "a1 c101 00"):
        with pytest.raises(MalformedError, match=r"map key at offset [13] must be an integer or a text or byte string"):
            cbor.loads(bytes.fromhex(hexdata.replace(" ", "")))
    assert cbor.loads(bytes.fromhex("a3 01 00 20 00 41 01 00".replace(" ", ""))) == {1: 0, -1: 0, b"\x01": 0}


def test_scan_cost_is_linear_in_the_input() -> None:
    # 10,000 items (the item limit) in the largest shape allowed: far below a second, however nested
    flat = cbor2.dumps([0] * 9_999)
    nested = cbor2.dumps([[[[[[[[[[[[[[["x"] * 666]]]]]]]]]]]]]])
    for data in (flat, nested):
        started = time.perf_counter()
        cbor.scan(data)
        assert time.perf_counter() - started < 0.5


def test_decode_from_bytes_gives_what_decoding_a_new_stream_gives() -> None:
    # cbor.loads hands scanned bytes to the per-thread decoder's decode_from_bytes; it must decode, and
    # fail, exactly as setting its fp to a BytesIO over the bytes and calling decode() did
    rng = random.Random(8949)
    seeds = [
        cbor2.dumps({1: -7, 4: b"kid", 15: {1: "iss", 2: "sub", 6: 1_700_000_000}, 258: -16, 259: "application/json"}),
        cbor2.dumps(
            [None, True, 1.5, -(2**64), b"", "", {}, [], cbor2.CBORTag(1, 0), cbor2.CBORTag(0, "2025-01-01T00:00:00Z")]
        ),
        b"\xc1\x1b\xff\xff\xff\xff\xff\xff\xff\xff",  # an epoch date no datetime can hold
        b"\xc0\x61\x78",  # a date string that is not one
        b"\x62\xc3\x28",  # invalid UTF-8
    ]
    inputs = list(seeds)
    for _ in range(3000):
        mutated = bytearray(rng.choice(seeds))
        mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        inputs.append(bytes(mutated))
    decoder = cbor2.CBORDecoder(io.BytesIO(b""))

    def outcome(decode: Callable[[], object]) -> str:
        try:
            return repr(decode())
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"

    def by_stream(data: bytes) -> object:
        decoder.fp = io.BytesIO(data)
        return decoder.decode()

    decoded = 0
    for data in inputs:
        try:
            cbor.scan(data)
        except MalformedError:
            continue  # cbor.loads never decodes these
        expected = outcome(partial(by_stream, data))
        assert outcome(partial(cbor._codec.loads, data)) == expected, data.hex()
        decoded += not expected.startswith(("CBORDecodeError", "ValueError", "OverflowError"))
    assert decoded > 500
