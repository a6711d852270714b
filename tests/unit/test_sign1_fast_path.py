"""The hand-read COSE_Sign1 shape (`sign1._plain_parts`) against the generic path (scan, then cbor2).

`sign1.decode` reads a plain message (tag 18 or none, array(4), bstr, empty map, bstr or nil, bstr)
by hand and sends everything else to `_decode_generic`. Both must give the same outcome on every
input: the same decoded fields, or the same exception class and message. The inputs are the hostile
CBOR and COSE inputs of the other tests, and a few thousand seeded mutations of valid statements.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterator
from functools import partial
from typing import Any

import cbor2
import pytest

from scitt_oci.cose import cbor, sign1
from scitt_oci.cose.cbor import DEFAULT_LIMITS, Limits
from scitt_oci.errors import Rejection
from scitt_oci.log.policy import RegistrationPolicy
from scitt_oci.scitt import statement
from tests.helpers import cbor_bomb, key

Outcome = tuple[str, str]


def _outcome(decode: Callable[[], Any]) -> Outcome:
    """What a call gave: its result's fields, or its exception's class and message (as text, so NaN equals NaN)."""
    try:
        m = decode()
    except Exception as exc:
        return ("raised", f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}")
    fields = (m.protected_bytes, m.protected, m.unprotected, m.payload, m.signature, m.tagged, m._encoded)
    return ("decoded", repr(fields))


def _bstr(value: bytes, width: int = 0) -> bytes:
    """A byte string head and its bytes; `width` forces a 1-, 2-, 4- or 8-byte length (non-preferred)."""
    if width:
        return bytes((0x57 + {1: 1, 2: 2, 4: 3, 8: 4}[width],)) + len(value).to_bytes(width, "big") + value
    return cbor.bstr(value)


def _assemble(
    protected: bytes,
    payload: bytes | None,
    signature: bytes,
    *,
    tag: bytes = b"\xd2",
    array: bytes = b"\x84",
    unprotected: bytes = b"\xa0",
    width: dict[str, int] | None = None,
) -> bytes:
    """A COSE_Sign1 from its parts, with the heads given (`width`: a part's length in a longer form)."""
    width = width or {}
    payload_bytes = b"\xf6" if payload is None else _bstr(payload, width.get("payload", 0))
    return (
        tag
        + array
        + _bstr(protected, width.get("protected", 0))
        + unprotected
        + payload_bytes
        + _bstr(signature, width.get("signature", 0))
    )


def _statements() -> list[tuple[bytes, bytes | None, bytes]]:
    """The parts (protected bytes, payload, signature) of a few valid messages of different shapes."""
    out = []
    for i, alg in enumerate(("ES256", "ES256", "EdDSA")):
        s = statement.hash_envelope_statement(
            key(alg),
            issuer="https://wabbit-networks.example",
            subject=f"oci://registry.example/net-monitor@sha256:{hashlib.sha256(bytes([i])).hexdigest()}",
            digest=hashlib.sha256(bytes([i])).digest(),
            media_type="application/vnd.oci.image.manifest.v1+json",
            iat=1_764_028_306 + i,
        )
        out.append((s.message.protected_bytes, s.message.payload, s.message.signature))
    plain = sign1.sign(key(), {}, b"payload")
    detached = sign1.sign(key(), {3: "text/plain"}, None, detached_payload=b"elsewhere")
    empty_protected = b""
    out += [
        (plain.protected_bytes, plain.payload, plain.signature),
        (detached.protected_bytes, None, detached.signature),
        (empty_protected, b"", b""),
    ]
    return out


_UNPROTECTED = [  # non-empty unprotected headers, of every kind the generic path must judge
    b"\xa1\x04\x41\x00",  # kid
    b"\xa1\x01\x26",  # alg, also in the protected header of most bases
    b"\xa1\x0f\xa0",  # CWT Claims
    b"\xa1\x19\x01\x02\x20",  # payload-hash-alg
    b"\xa1\x61\x78\x00",  # a text label
    b"\xa1\xf5\x00",  # a label that is neither
    b"\xa2\x04\x40\x04\x40",  # a duplicate key
    b"\xbf\xff",  # indefinite length
    b"\xb8\x00",  # an empty map, non-preferred
    b"\xa1\x18\x21\x40",  # x5chain
]


def _mutate(rng: random.Random, parts: tuple[bytes, bytes | None, bytes]) -> bytes:
    protected, payload, signature = parts
    kind = rng.randrange(12)
    if kind == 0:  # a non-empty unprotected header
        return _assemble(protected, payload, signature, unprotected=rng.choice(_UNPROTECTED))
    if kind == 1:  # tag 18 absent, another tag, tag 18 non-preferred, twice, or a tag the scan refuses
        tag = rng.choice([b"", b"\xd8\x12", b"\xd2\xd2", b"\xc6", b"\xd8\x1c", b"\xd1", b"\xd9\x00\x12"])
        return _assemble(protected, payload, signature, tag=tag)
    if kind == 2:  # another array head
        array = rng.choice([b"\x83", b"\x85", b"\x98\x04", b"\x9f", b"\x80", b"\xa4"])
        return _assemble(protected, payload, signature, array=array)
    if kind == 3:  # lengths in a longer (non-preferred) form
        width = {rng.choice(["protected", "payload", "signature"]): rng.choice([1, 2, 4, 8])}
        return _assemble(protected, payload, signature, width=width)
    data = bytearray(_assemble(protected, payload, signature, tag=rng.choice([b"\xd2", b"\xd2", b""])))
    if kind == 4:  # a byte changed
        data[rng.randrange(len(data))] = rng.randrange(256)
    elif kind == 5:  # truncated
        del data[rng.randrange(len(data)) :]
    elif kind == 6:  # bytes inserted
        at = rng.randrange(len(data) + 1)
        data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 3)))
    elif kind == 7:  # bytes removed
        at = rng.randrange(len(data))
        del data[at : at + rng.randint(1, 3)]
    elif kind == 8:  # trailing bytes
        data += bytes(rng.randrange(256) for _ in range(rng.randint(1, 3)))
    elif kind == 9:  # a length head replaced by an oversized one (or one a little too long or short)
        at = rng.randrange(len(data))
        data[at : at + 1] = rng.choice(
            [b"\x5b\xff\xff\xff\xff\xff\xff\xff\xff", b"\x5a\x00\x01\x00\x00", bytes(((data[at] + 1) % 256,))]
        )
    elif kind == 10:  # the payload or signature head changed (nil, text, empty)
        return _assemble(
            protected,
            rng.choice([None, b"", payload]),
            signature,
            unprotected=rng.choice([b"\xa0", b"\xa0", b"\x80", b"\xf6"]),
        )
    else:  # the protected header's bytes changed inside (its own scan meets it on both paths)
        inner = bytearray(protected or b"\xa0")
        inner[rng.randrange(len(inner))] = rng.randrange(256)
        return _assemble(bytes(inner), payload, signature)
    return bytes(data)


_LIMITS = [
    Limits(max_depth=1),
    Limits(max_depth=2),
    Limits(max_depth=3),
    Limits(max_items=5),
    Limits(max_items=6),
    Limits(max_items=7),
    Limits(max_bytes=100),
    Limits(max_bytes=400),
]


def _inputs(rng: random.Random) -> Iterator[bytes]:
    """The hostile inputs the other tests use, then the valid messages and seeded mutations of them."""
    for size in (229, 1024):
        yield cbor_bomb(size, sign1=True)
        yield cbor_bomb(size)
    for hexdata in ("d81d00", "d81900", "d9010080", "d9001c00", "c4820101", "d81e820102", "d82362612a", "d82460"):
        yield bytes.fromhex(hexdata)
    yield from (
        b"",
        b"\xff",
        b"\xd2",
        b"\xd2\x84",
        b"\x84\x40\xa0\xf6",
        b"\x84\x40\xa0\xf6\x40",
        b"\xc1\x1b" + b"\xff" * 8,
    )
    for value in (
        cbor2.CBORTag(18, [b"", {}, None]),
        cbor2.CBORTag(18, ["x", {}, None, b""]),
        cbor2.CBORTag(18, [b"", [], None, b""]),
        cbor2.CBORTag(18, [b"", {}, 5, b""]),
        cbor2.CBORTag(18, [b"", {}, None, "s"]),
        cbor2.CBORTag(18, [cbor2.dumps([1]), {}, None, b""]),
        cbor2.CBORTag(18, [cbor2.dumps({1: -7}), {1: -7}, None, b""]),
        cbor2.CBORTag(18, [cbor2.dumps({1: -7, 2: [999]}), {}, None, b""]),
        cbor2.CBORTag(18, [cbor2.dumps({1: -7, 2: [3]}), {}, None, b""]),
        cbor2.CBORTag(18, [cbor2.dumps({1: -7, 4: "text kid"}), {}, b"p", b"s"]),
        cbor2.CBORTag(18, [bytes.fromhex("a10138" + "06"), {}, b"x", b"s"]),
        cbor2.CBORTag(99, [b"", {}, None, b""]),
    ):
        yield cbor2.dumps(value)
    message = sign1.sign(key(), {}, b"payload").encode()
    yield b"\xd2\x9f" + message[2:] + b"\xff"
    for _ in range(200):
        yield bytes(rng.randrange(256) for _ in range(rng.randrange(40)))
    bases = _statements()
    for parts in bases:
        yield _assemble(*parts)
        yield _assemble(*parts, tag=b"")
    for _ in range(4000):
        parts = rng.choice(bases)
        data = _mutate(rng, parts)
        if rng.random() < 0.2:  # now and then a second mutation on top of the first
            data = _mutate(rng, (data, parts[1], parts[2])) if rng.random() < 0.5 else data + b"\x00"
        yield data


def test_the_fast_path_decodes_and_refuses_exactly_as_the_generic_path() -> None:
    rng = random.Random(20261201)
    fast = generic = fast_decoded = fast_refused = 0
    for data in _inputs(rng):
        limits = rng.choice(_LIMITS) if rng.random() < 0.2 else DEFAULT_LIMITS
        require_tag, unknown = rng.random() < 0.3, rng.random() < 0.3
        ours = _outcome(partial(sign1.decode, data, limits, require_tag=require_tag, unknown_critical=unknown))
        reference = _outcome(partial(sign1._decode_generic, data, limits, require_tag, unknown))
        assert ours == reference, f"{data.hex()} under {limits}, require_tag={require_tag}, unknown={unknown}"
        if sign1._plain_parts(data, limits) is None:
            generic += 1
        else:
            fast += 1
            fast_decoded += ours[0] == "decoded"
            fast_refused += ours[0] == "raised"
    # Both routes, and on the fast one both outcomes, were exercised many times over.
    assert fast > 800 and generic > 800 and fast_decoded > 300 and fast_refused > 100, (fast, generic)


def test_registration_outcomes_do_not_depend_on_the_route(monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole registration check, fast path against generic path: the same statement or the same rejection."""
    policy = RegistrationPolicy.build(issuer_keys=[key(), key("EdDSA")])
    rng = random.Random(9943)
    bases = _statements()
    inputs = [_assemble(*parts) for parts in bases] + [_mutate(rng, rng.choice(bases)) for _ in range(600)]

    def check(data: bytes) -> Outcome:
        try:
            signed = policy.check(data)
        except Rejection as exc:
            return ("rejected", f"{exc.kind}: {exc.detail}")
        return ("accepted", repr((signed.entry(), signed.message, signed.claims, signed.envelope)))

    ours = [check(data) for data in inputs]
    monkeypatch.setattr(sign1, "_plain_parts", lambda data, limits: None)
    reference = [check(data) for data in inputs]
    for data, a, b in zip(inputs, ours, reference, strict=True):
        assert a == b, data.hex()
    assert sum(o[0] == "accepted" for o in ours) > 20 and sum(o[0] == "rejected" for o in ours) > 200
