"""Bounded CBOR decoding.

`cbor2` decodes fast but accepts trailing bytes, indefinite lengths, silently keeps the last of
duplicate map keys, has only a generous depth limit, and gives some tags meanings whose cost is
not linear in the input (value sharing and string references build structures that expand
exponentially when walked or re-encoded; bigfloats and rationals do arithmetic on numbers the
sender chose). Everything we decode comes from someone else, so a structural pre-scan over the
bytes runs first, before any decoding: one pass, no recursion, cost linear in the input. It checks
well-formedness, total size, nesting depth, item counts, indefinite lengths, trailing bytes,
duplicate map keys and the tags we refuse, and only then hands the bytes to `cbor2`.
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

# Tags that cbor2 would give a meaning whose cost is not a linear copy of the input, and that
# nothing we read uses: 4 decimal fraction, 5 bigfloat (2**exponent), 25 and 256 string references,
# 28 and 29 value sharing (shared or cyclic structures), 30 rational (gcd of big numbers),
# 35 regular expression (compiled), 36 MIME message (parsed).
REFUSED_TAGS = frozenset({4, 5, 25, 28, 29, 30, 35, 36, 256})
_TAG_NAMES = {
    4: "decimal fraction",
    5: "bigfloat",
    25: "string reference",
    28: "shareable value",
    29: "shared value reference",
    30: "rational number",
    35: "regular expression",
    36: "MIME message",
    256: "string reference namespace",
}
# Bignums (tags 2 and 3) are accepted up to this many content bytes: no COSE or CWT field needs more.
MAX_BIGNUM_BYTES = 16


def scan(data: bytes, limits: Limits = DEFAULT_LIMITS) -> None:
    """Check that `data` is exactly one well-formed CBOR item within `limits`, without decoding it.

    One iterative pass over the bytes (cost linear in `len(data)`); raises `LimitExceededError` or
    `MalformedError` naming the offset of the problem. Refused: indefinite-length items (nothing we
    read needs them, and they complicate bounds), the tags in `REFUSED_TAGS`, bignums longer than
    `MAX_BIGNUM_BYTES`, map keys other than integers and strings (so that no two distinct encodings
    decode to equal keys, e.g. `1`, `1.0` and `true`), and duplicate map keys.
    """
    n = len(data)
    if n > limits.max_bytes:
        raise LimitExceededError(f"CBOR input is {n} bytes; the limit is {limits.max_bytes}")
    if n == 0:
        raise MalformedError("CBOR input is empty")
    _walk(data, limits)


def _walk(data: bytes, limits: Limits) -> None:
    """The pass itself. No recursion: a container pushes what its parent still expects onto `outer`
    and pops it back once its own items are read, so the cost is one step per item and the stack stays flat."""
    n = len(data)
    pos = 0
    items = 1  # items declared so far: the top-level one, then each container's and tag's content
    left = 1  # items still to read in the innermost open container (or at the top level)
    keys: set[object] | None = None  # the keys seen so far when that container is a map
    bignum = False  # the item being read is the content of a bignum tag
    outer: list[tuple[int, set[object] | None]] = []  # the enclosing containers
    while left or outer:
        if not left:
            left, keys = outer.pop()
            continue
        left -= 1
        start = pos
        initial = data[pos] if pos < n else 0xFF  # past the end: 0xff, which _read_head reports as truncated
        info = initial & 0x1F
        major = initial >> 5
        if info < 24:  # the argument is in the initial byte, or in the 1, 2, 4 or 8 after it: read without a call
            arg, pos = info, pos + 1
        elif info < 28 and (end := pos + 1 + (1 << (info - 24))) <= n:
            arg = (
                data[pos + 1]
                if info == 24
                else (data[pos + 1] << 8 | data[pos + 2])
                if info == 25
                else int.from_bytes(data[pos + 1 : end], "big")
            )
            pos = end
        else:
            major, info, arg, pos = _read_head(data, pos)
        if keys is not None and left & 1:  # a map key (a bignum's content is never one: a tag holds it)
            if major < 2 and (label := arg if major == 0 else -1 - arg) not in keys:
                keys.add(label)  # a new integer key, the usual case: no call
            else:
                pos = _other_key(data, start, pos, major, arg, keys)
        elif bignum:
            pos, bignum = _bignum_content(data, start, pos, major, arg), False
        elif major == 2 or major == 3:  # a string skipped without a call (one too long: _skip_string says so)
            pos = pos + arg if arg <= n - pos else _skip_string(data, start, pos, major, arg, False, None)
        elif 4 <= major <= 6:
            count, bignum = _content(start, major, arg, n - pos, len(outer), limits)
            items += count
            _check_items(items, limits)
            outer.append((left, keys))  # an empty container too: popped at once, having nothing to read
            left, keys = count, (set() if major == 5 else None)
        elif major == 7 and info == 24 and arg < 32:
            raise MalformedError(f"CBOR: invalid simple value encoding at offset {start}")
    if pos != n:
        raise MalformedError(f"CBOR: {n - pos} trailing bytes after the item at offset {pos}")


def _read_head(data: bytes, start: int) -> tuple[int, int, int, int]:
    """The major type, additional information and argument of the item at `start`, and the offset after them."""
    n = len(data)
    if start >= n:
        raise MalformedError(f"CBOR: truncated input at offset {start}")
    initial = data[start]
    major = initial >> 5
    info = initial & 0x1F
    pos = start + 1
    if info < 24:
        return major, info, info, pos
    if info < 28:
        end = pos + (1 << (info - 24))
        if end > n:
            raise MalformedError(f"CBOR: truncated argument at offset {pos}")
        return major, info, (data[pos] if info == 24 else int.from_bytes(data[pos:end], "big")), end
    if info == 31:
        if major == 7:
            raise MalformedError(f"CBOR: unexpected break (0xff) at offset {start}")
        raise MalformedError(f"CBOR: indefinite-length item at offset {start} is not accepted")
    raise MalformedError(f"CBOR: reserved additional information {info} at offset {start}")


def _skip_string(
    data: bytes, start: int, pos: int, major: int, length: int, bignum: bool, keys: set[object] | None
) -> int:
    """The offset after a byte or text string of `length` bytes at `pos`; checks it as a bignum's content
    when `bignum`, and as a key of the map whose keys so far are `keys` when that is not None."""
    if length > len(data) - pos:
        raise MalformedError(f"CBOR: string at offset {start} declares {length} bytes; {len(data) - pos} remain")
    if bignum and (major != 2 or length > MAX_BIGNUM_BYTES):
        raise MalformedError(
            f"CBOR: bignum at offset {start} must be a byte string of at most {MAX_BIGNUM_BYTES} bytes"
        )
    if keys is not None:
        key = (major, data[pos : pos + length])
        if key in keys:
            raise MalformedError(f"CBOR: duplicate map key at offset {start}")
        keys.add(key)
    return pos + length


def _other_key(data: bytes, start: int, pos: int, major: int, arg: int, keys: set[object]) -> int:
    """A map key that is not a new integer: a string, accepted once per map, or an error. The offset after it."""
    if major < 2:
        raise MalformedError(f"CBOR: duplicate map key at offset {start}")
    if major > 3:
        raise MalformedError(f"CBOR: map key at offset {start} must be an integer or a text or byte string")
    return _skip_string(data, start, pos, major, arg, False, keys)


def _bignum_content(data: bytes, start: int, pos: int, major: int, length: int) -> int:
    """The content of a bignum tag (2 or 3): a byte string of at most MAX_BIGNUM_BYTES. The offset after it."""
    if major != 2 and major != 3:
        raise MalformedError(f"CBOR: bignum at offset {start} must be a byte string")
    return _skip_string(data, start, pos, major, length, True, None)


def _check_items(items: int, limits: Limits) -> None:
    if items > limits.max_items:
        raise LimitExceededError(f"CBOR input has more than {limits.max_items} items")


def _content(start: int, major: int, arg: int, remaining: int, depth: int, limits: Limits) -> tuple[int, bool]:
    """How many items an array (4), map (5) or tag (6) opened at `depth` holds, and whether it is a bignum tag."""
    max_depth = limits.max_depth
    if depth >= max_depth:
        raise LimitExceededError(f"CBOR nesting deeper than {max_depth} at offset {start}")
    if major == 6:
        if arg in REFUSED_TAGS:
            raise MalformedError(f"CBOR: tag {arg} ({_TAG_NAMES[arg]}) at offset {start} is not accepted")
        return 1, arg == 2 or arg == 3
    count = arg * 2 if major == 5 else arg
    if count > remaining:
        raise MalformedError(f"CBOR: container at offset {start} declares more items than bytes remain")
    return count, False


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

    def loads(self, data: bytes) -> Any:
        # what setting `fp` to a BytesIO and calling decode() does, without the setter's checks (0.9 us less)
        return self.decoder.decode_from_bytes(data)


_codec = _Codec()


def loads(data: bytes, limits: Limits = DEFAULT_LIMITS) -> Any:
    """Decode one CBOR item from untrusted bytes, within `limits`.

    `scan` checks the bytes first, so `cbor2` only ever sees one well-formed item with none of the
    constructs we refuse: its work, like the scan's, is linear in the input.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise MalformedError(f"CBOR input must be bytes, not {type(data).__name__}")
    data = bytes(data)
    scan(data, limits)
    try:
        return _codec.loads(data)
    except Exception as exc:  # cbor2 raises several types, e.g. ValueError for a date out of range
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


def uint(value: int) -> bytes:
    """A CBOR unsigned integer (preferred encoding, as `dumps` gives it)."""
    return _head(0, value)


def array_head(count: int) -> bytes:
    """The head of a CBOR array of `count` items (its items follow, each encoded)."""
    return _head(4, count)


def bstr(value: bytes) -> bytes:
    """A CBOR byte string (encoded by hand: this is on every signature check's path)."""
    return bstr_head(len(value)) + value


def bstr_head(length: int) -> bytes:
    """The head of a CBOR byte string of `length` bytes (its bytes follow)."""
    if length < 24:
        return _SHORT_BSTR_HEADS[length]
    if length < 0x100:
        return bytes((0x58, length))
    return _head(2, length)


_SHORT_BSTR_HEADS = [bytes((0x40 | n,)) for n in range(24)]


def dumps(value: Any) -> bytes:
    """Encode `value` as CBOR (definite lengths; map order as given)."""
    return _codec.dumps(value)


def dumps_canonical(value: Any) -> bytes:
    """Encode `value` in core deterministic CBOR (RFC 8949 section 4.2.1)."""
    return cbor2.dumps(value, canonical=True)
