"""C2SP tlog-tiles layout (c2sp.org/tlog-tiles): tile paths, tile widths for a tree size, entry bundles,
and the tree's root and proofs computed from 256-wide hash tiles.

A level-L tile N holds up to 256 hashes, hash i being MTH(D[(N*256+i)*256^L : (N*256+i+1)*256^L]).
Full tiles are 8,192 bytes; the right-edge tile of a level is partial, `floor(size/256^L) mod 256` wide.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from scitt_oci.errors import MalformedError
from scitt_oci.errors import TilePathError as TilePathError  # defined there since #12; kept importable here
from scitt_oci.scitt import merkle

WIDTH = 256
HASH = merkle.HASH_SIZE
FULL_BYTES = WIDTH * HASH
MAX_ENTRY = 0xFFFF
MAX_LEVEL = 63
ENTRIES = -1  # the "level" of entry bundles in a `TileRef`


@dataclass(frozen=True)
class TileRef:
    level: int  # ENTRIES for an entry bundle
    index: int
    width: int = WIDTH  # < WIDTH: a partial tile

    @property
    def partial(self) -> bool:
        return self.width < WIDTH

    def path(self) -> str:
        return tile_path(self.level, self.index, self.width)


def index_path(index: int) -> str:
    """1234067 -> x001/x234/067: zero-padded 3-digit elements, all but the last prefixed with x."""
    if index < 0:
        raise TilePathError(f"tile index {index} is negative")
    parts = [f"{index % 1000:03d}"]
    index //= 1000
    while index:
        parts.append(f"x{index % 1000:03d}")
        index //= 1000
    return "/".join(reversed(parts))


def tile_path(level: int, index: int, width: int = WIDTH) -> str:
    """`tile/<L>/<N>[.p/<W>]`, or `tile/entries/<N>[.p/<W>]` for level ENTRIES."""
    if not 1 <= width <= WIDTH:
        raise TilePathError(f"tile width {width} is outside 1..256")
    head = "entries" if level == ENTRIES else str(level)
    tail = "" if width == WIDTH else f".p/{width}"
    return f"tile/{head}/{index_path(index)}{tail}"


def parse_tile_path(path: str) -> TileRef:
    """The inverse of `tile_path`, strict: no leading zeroes in L or W, x-prefixes where required."""
    parts = path.split("/")
    if len(parts) < 3 or parts[0] != "tile":
        raise TilePathError(f"{path[:100]!r} is not tile/<L>/<N>[.p/<W>]")
    head, rest = parts[1], parts[2:]
    if head == "entries":
        level = ENTRIES
    elif head.isascii() and head.isdigit() and (head == "0" or not head.startswith("0")) and len(head) <= 2:
        level = int(head)
        if level > MAX_LEVEL:
            raise TilePathError(f"tile level {level} is above {MAX_LEVEL}")
    else:
        raise TilePathError(f"tile level {head[:20]!r} is not a decimal 0..63 without leading zeroes")
    width = WIDTH
    if len(rest) >= 2 and rest[-2].endswith(".p"):
        w = rest[-1]
        if not (w.isascii() and w.isdigit() and not w.startswith("0") and len(w) <= 3 and 1 <= int(w) < WIDTH):
            raise TilePathError(f"partial tile width {w[:10]!r} is not a decimal 1..255 without leading zeroes")
        width = int(w)
        rest = [*rest[:-2], rest[-2][:-2]]
    if not rest or len(rest) > 7:
        raise TilePathError(f"{path[:100]!r} has no valid tile index")
    index = 0
    for i, element in enumerate(rest):
        last = i == len(rest) - 1
        digits = element if last else element[1:]
        if (
            (not last and not element.startswith("x"))
            or len(digits) != 3
            or not (digits.isascii() and digits.isdigit())
        ):
            raise TilePathError(f"tile index element {element[:10]!r} is not {'NNN' if last else 'xNNN'}")
        index = index * 1000 + int(digits)
    if len(rest) > 1 and rest[0] == "x000":
        raise TilePathError("tile index has a leading x000 element")
    return TileRef(level, index, width)


def level_width(size: int, level: int) -> int:
    """How many hashes level `level` holds in a tree of `size` (entries count for level 0)."""
    return size // (1 << (8 * max(level, 0)))


def tiles_for(size: int, level: int) -> Iterator[TileRef]:
    """Every tile of one level of the tree of `size` (the last one partial if it is not full)."""
    n = level_width(size, level)
    full, rest = divmod(n, WIDTH)
    for i in range(full):
        yield TileRef(level, i)
    if rest:
        yield TileRef(level, full, rest)


def levels(size: int) -> int:
    """The number of hash levels that hold at least one hash in a tree of `size`."""
    count = 0
    while level_width(size, count) > 0:
        count += 1
    return count


# ----- entry bundles -----
def encode_bundle(entries: Sequence[bytes]) -> bytes:
    out = bytearray()
    for e in entries:
        if len(e) > MAX_ENTRY:
            raise MalformedError(f"an entry of {len(e)} bytes does not fit an entry bundle (at most {MAX_ENTRY})")
        out += len(e).to_bytes(2, "big") + e
    return bytes(out)


def decode_bundle(data: bytes, expected: int | None = None) -> list[bytes]:
    entries: list[bytes] = []
    pos = 0
    while pos < len(data):
        if pos + 2 > len(data):
            raise MalformedError("entry bundle ends inside a length prefix")
        n = int.from_bytes(data[pos : pos + 2], "big")
        if pos + 2 + n > len(data):
            raise MalformedError(f"entry bundle is truncated: entry {len(entries)} claims {n} bytes")
        entries.append(data[pos + 2 : pos + 2 + n])
        pos += 2 + n
        if len(entries) > WIDTH:
            raise MalformedError("entry bundle holds more than 256 entries")
    if expected is not None and len(entries) != expected:
        raise MalformedError(f"entry bundle holds {len(entries)} entries; expected {expected}")
    return entries


def split_hashes(tile: bytes) -> list[bytes]:
    if len(tile) % HASH or len(tile) > FULL_BYTES:
        raise MalformedError(f"a hash tile of {len(tile)} bytes is not a whole number of hashes up to 256")
    return [tile[i : i + HASH] for i in range(0, len(tile), HASH)]


def tile_root(tile: bytes) -> bytes:
    """The hash a full tile contributes to the level above."""
    return merkle.root_of(split_hashes(tile))


# ----- the tree from tiles -----
TileSource = Callable[[int, int], bytes]  # (level, index) -> that tile's hashes as known (full or partial)


class TiledTree:
    """MTH of any range of a tree of `size`, read from 256-wide hash tiles (C2SP layout)."""

    def __init__(self, read: TileSource, size: int) -> None:
        self._read = read
        self.size = size
        self._tiles: dict[tuple[int, int], list[bytes]] = {}

    def _hash(self, level: int, index: int) -> bytes:
        key = (level, index // WIDTH)
        hashes = self._tiles.get(key)
        slot = index % WIDTH
        if hashes is None or len(hashes) <= slot:
            hashes = split_hashes(self._read(*key))
            self._tiles[key] = hashes
        if len(hashes) <= slot:
            raise MalformedError(f"tile {tile_path(level, index // WIDTH)} lacks hash {slot}")
        return hashes[slot]

    def hash_range(self, begin: int, end: int) -> bytes:
        if not 0 <= begin <= end <= self.size:
            raise MalformedError(f"range [{begin}, {end}) is outside a tree of {self.size}")
        n = end - begin
        if n == 0:
            return merkle.EMPTY_ROOT
        # A complete subtree of 256^L leaves aligned on its size is one hash in a level-L tile.
        level, span = 0, 1
        while span * WIDTH <= n and begin % (span * WIDTH) == 0:
            level, span = level + 1, span * WIDTH
        if n == span and begin % span == 0:
            return self._hash(level, begin // span)
        if n & (n - 1) == 0 and begin % n == 0 and n < span * WIDTH:
            # A complete subtree inside one tile of `level`: hash its 2^k hashes of that level.
            first = begin // span
            return merkle.root_of([self._hash(level, first + i) for i in range(n // span)])
        k = merkle.split_point(n)
        return merkle.node_hash(self.hash_range(begin, begin + k), self.hash_range(begin + k, end))

    def root(self) -> bytes:
        return self.hash_range(0, self.size)
