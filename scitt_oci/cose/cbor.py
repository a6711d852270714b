"""Bounded CBOR decoding.

`cbor2` decodes fast but accepts trailing bytes, silently keeps the last of duplicate map keys
and has only a generous depth limit. Everything we decode comes from someone else, so a cheap
structural scan runs first: it checks well-formedness, total size, nesting depth, item counts,
trailing bytes and duplicate map keys, and only then hands the bytes to `cbor2`.
"""

from __future__ import annotations

import io
import threading
from dataclasses import dataclass
from typing import Any

import cbor2

from scitt_oci.errors import LimitExceededError, MalformedError


@dataclass(frozen=True)
class Limits:
    """Bounds applied to every untrusted CBOR input."""

    max_bytes: int = 1 << 20
    max_depth: int = 16
    max_items: int = 10_000


DEFAULT_LIMITS = Limits()

# Tags that make cbor2 build shared or cyclic structures: nothing we read uses them.
_REFUSED_TAGS = frozenset({25, 28, 29, 256})
# Major types whose argument is a length of content bytes (2 = bstr, 3 = tstr).
_STRING_MAJORS = (2, 3)


def _argument(data: bytes, pos: int, info: int) -> tuple[int, int]:
    """Read the argument of an initial byte whose additional info is `info`; returns (value, next pos)."""
    if info < 24:
        return info, pos
    if info > 27:
        raise MalformedError(f"CBOR: reserved additional information {info} at offset {pos - 1}")
    size = 1 << (info - 24)
    end = pos + size
    if end > len(data):
        raise MalformedError(f"CBOR: truncated argument at offset {pos}")
    return int.from_bytes(data[pos:end], "big"), end


def scan(data: bytes, limits: Limits = DEFAULT_LIMITS) -> None:
    """Check that `data` is exactly one well-formed CBOR item within `limits`.

    Raises `LimitExceededError` or `MalformedError` naming the offset of the problem.
    Indefinite-length items are refused: nothing we read needs them and they complicate bounds.
    """
    n = len(data)
    if n > limits.max_bytes:
        raise LimitExceededError(f"CBOR input is {n} bytes; the limit is {limits.max_bytes}")
    if n == 0:
        raise MalformedError("CBOR input is empty")
    pos = 0
    items = 0
    # Each frame: [remaining items, key set or None, is_map_and_expecting_key]
    stack: list[list[Any]] = []
    remaining_top = 1
    while True:
        if stack:
            frame = stack[-1]
            if frame[0] == 0:
                stack.pop()
                continue
            frame[0] -= 1
            is_key = frame[1] is not None and frame[0] % 2 == 1
        elif remaining_top:
            remaining_top = 0
            is_key = False
        else:
            break
        if pos >= n:
            raise MalformedError(f"CBOR: truncated input at offset {pos}")
        items += 1
        if items > limits.max_items:
            raise LimitExceededError(f"CBOR input has more than {limits.max_items} items")
        start = pos
        initial = data[pos]
        major = initial >> 5
        info = initial & 0x1F
        pos += 1
        if info == 31:
            raise MalformedError(f"CBOR: indefinite-length item at offset {start} is not accepted")
        value, pos = _argument(data, pos, info)
        if major in _STRING_MAJORS:
            if value > n - pos:
                raise MalformedError(f"CBOR: string at offset {start} declares {value} bytes; {n - pos} remain")
            pos += value
        elif major == 4 or major == 5:
            count = value * 2 if major == 5 else value
            if count > n - pos:
                raise MalformedError(f"CBOR: container at offset {start} declares more items than bytes remain")
            if len(stack) + 1 > limits.max_depth:
                raise LimitExceededError(f"CBOR nesting deeper than {limits.max_depth} at offset {start}")
        elif major == 6:
            if value in _REFUSED_TAGS:
                raise MalformedError(
                    f"CBOR: tag {value} (value sharing or string references) at offset {start} is not accepted"
                )
            if len(stack) + 1 > limits.max_depth:
                raise LimitExceededError(f"CBOR nesting deeper than {limits.max_depth} at offset {start}")
        elif major == 7 and info == 24 and value < 32:
            raise MalformedError(f"CBOR: invalid simple value encoding at offset {start}")
        if is_key:
            keys = stack[-1][1]
            # Keys are compared by encoding: labels and claim names are ints and short strings.
            raw = data[start:pos] if major not in (4, 5, 6) else None
            if raw is not None:
                if raw in keys:
                    raise MalformedError(f"CBOR: duplicate map key at offset {start}")
                keys.add(raw)
        if major == 4:
            if value:
                stack.append([value, None])
        elif major == 5:
            if value:
                stack.append([value * 2, set()])
        elif major == 6:
            stack.append([1, None])
    if pos != n:
        raise MalformedError(f"CBOR: {n - pos} trailing bytes after the item at offset {pos}")


_CONTAINERS = frozenset({dict, list, tuple, cbor2.CBORTag, cbor2.FrozenDict})
_MAPS = frozenset({dict, cbor2.FrozenDict})


def _check_shape(value: Any, limits: Limits) -> None:
    """Depth and item limits over an already-decoded value, one nesting level at a time."""
    items = 0
    depth = 0
    level = [value] if type(value) in _CONTAINERS else []
    while level:
        depth += 1
        if depth > limits.max_depth:
            raise LimitExceededError(f"CBOR nesting deeper than {limits.max_depth}")
        nxt: list[Any] = []
        for node in level:
            kind = type(node)
            if kind in _MAPS:
                items += 2 * len(node)
                nxt += [v for v in node.values() if type(v) in _CONTAINERS]
                nxt += [k for k in node if type(k) in _CONTAINERS]
            elif kind is cbor2.CBORTag:
                items += 1
                if type(node.value) in _CONTAINERS:
                    nxt.append(node.value)
            else:
                items += len(node)
                nxt += [v for v in node if type(v) in _CONTAINERS]
        if items > limits.max_items:
            raise LimitExceededError(f"CBOR input has more than {limits.max_items} items")
        level = nxt


class _Codec(threading.local):
    """A per-thread cbor2 encoder and decoder: building them costs more than using them on small inputs."""

    def __init__(self) -> None:
        self.out = io.BytesIO()
        self.encoder = cbor2.CBOREncoder(self.out)
        self.decoder = cbor2.CBORDecoder(io.BytesIO(b""))

    def dumps(self, value: Any) -> bytes:
        self.out.seek(0)
        self.out.truncate()
        self.encoder.encode(value)
        return self.out.getvalue()

    def loads(self, data: bytes) -> tuple[Any, bool]:
        """The first item of `data`, and whether it was all of `data`."""
        fp = io.BytesIO(data)
        self.decoder.fp = fp
        value = self.decoder.decode()
        return value, fp.tell() == len(data)


_codec = _Codec()


def decode_whole(data: bytes) -> Any:
    """Decode `data` with cbor2 alone, requiring it to be exactly one item; for callers that then
    check the shape of the result themselves (e.g. a COSE envelope) and know it is shallow."""
    try:
        value, whole = _codec.loads(data)
    except Exception as exc:
        raise MalformedError(f"CBOR: {exc}") from None
    if not whole:
        raise MalformedError("CBOR: trailing bytes after the item")
    return value


def loads(data: bytes, limits: Limits = DEFAULT_LIMITS) -> Any:
    """Decode one CBOR item from untrusted bytes, within `limits`.

    Fast path: when re-encoding the decoded value gives back exactly `data`, the input was
    well-formed, preferred-encoded, free of duplicate keys and trailing bytes, so only depth and
    item counts remain to check. Anything else goes through the full structural scan.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise MalformedError(f"CBOR input must be bytes, not {type(data).__name__}")
    data = bytes(data)
    if len(data) > limits.max_bytes:
        raise LimitExceededError(f"CBOR input is {len(data)} bytes; the limit is {limits.max_bytes}")
    codec = _codec
    try:
        value, whole = codec.loads(data)
        canonical = whole and codec.dumps(value) == data
    except Exception:  # cbor2 raises several types, including ValueError for bad tags
        canonical = False
        value = None
    if canonical:
        _check_shape(value, limits)
        return value
    scan(data, limits)
    try:
        return cbor2.loads(data)
    except Exception as exc:
        raise MalformedError(f"CBOR: {exc}") from None


def _head(major: int, n: int) -> bytes:
    """The initial bytes of a CBOR item of `major` type with argument `n` (preferred encoding)."""
    if n < 24:
        return bytes((major << 5 | n,))
    if n < 0x100:
        return bytes((major << 5 | 24, n))
    if n < 0x10000:
        return bytes((major << 5 | 25,)) + n.to_bytes(2, "big")
    if n < 0x100000000:
        return bytes((major << 5 | 26,)) + n.to_bytes(4, "big")
    return bytes((major << 5 | 27,)) + n.to_bytes(8, "big")


def bstr(value: bytes) -> bytes:
    """A CBOR byte string (encoded by hand: this is on every signature check's path)."""
    return _head(2, len(value)) + value


def dumps(value: Any) -> bytes:
    """Encode `value` as CBOR (definite lengths; map order as given)."""
    return _codec.dumps(value)


def dumps_canonical(value: Any) -> bytes:
    """Encode `value` in core deterministic CBOR (RFC 8949 section 4.2.1)."""
    return cbor2.dumps(value, canonical=True)
