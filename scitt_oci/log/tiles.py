"""Tree hashes stored as tiles, so any proof costs O(log n) reads and appends rewrite O(log n) bytes.

A tile of level k holds up to 16 consecutive node hashes at tree height 4k: level 0 holds leaf
hashes, level 1 the roots of complete 16-leaf subtrees, and so on. Any complete subtree's root is
computed from at most 16 hashes of one tile; any range's root from O(log n) complete subtrees.
Storage is ~32 bytes per leaf plus ~2 for the upper levels. Complete nodes never change, so they
are cached by (height, index).
"""

from __future__ import annotations

from collections.abc import Callable

from scitt_oci.errors import TileError as TileError  # defined there since #12; kept importable here
from scitt_oci.lru import LruCache
from scitt_oci.scitt import merkle

TILE_HEIGHT = 4
TILE_WIDTH = 1 << TILE_HEIGHT
HASH = merkle.HASH_SIZE

TileReader = Callable[[int, int], bytes]  # (level, index) -> concatenated hashes, b"" when absent


class NodeCache(LruCache[tuple[int, int], bytes]):
    """Roots of complete subtrees (or of stored ranges), which never change: (height, index) -> hash."""

    def __init__(self, capacity: int = 200_000) -> None:
        super().__init__(capacity)


class TileTree:
    """Root and proof computations over tiles read through `read`."""

    def __init__(self, read: TileReader, cache: NodeCache | None = None, ranges: NodeCache | None = None) -> None:
        self._read = read
        self._cache = cache or NodeCache()
        # Roots of right-edge ranges [begin, end) of stored trees never change either.
        self._ranges = ranges

    def node(self, height: int, index: int) -> bytes:
        """The root of the complete subtree of 2**height leaves starting at leaf index * 2**height."""
        key = (height, index)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        level, rest = divmod(height, TILE_HEIGHT)
        first = index << rest
        count = 1 << rest
        tile = self._read(level, first // TILE_WIDTH)
        start = (first % TILE_WIDTH) * HASH
        end = start + count * HASH
        if len(tile) < end:
            raise TileError(f"tile ({level}, {first // TILE_WIDTH}) lacks node ({height}, {index})")
        hashes = [tile[i : i + HASH] for i in range(start, end, HASH)]
        value = merkle.root_of(hashes)
        self._cache.put(key, value)
        return value

    def hash_range(self, begin: int, end: int) -> bytes:
        """MTH of leaves [begin, end): the `RangeHasher` that proof generation uses."""
        n = end - begin
        if n <= 0:
            return merkle.EMPTY_ROOT
        if n & (n - 1) == 0 and begin % n == 0:
            return self.node(n.bit_length() - 1, begin // n)
        if self._ranges is not None:
            cached = self._ranges.get((begin, end))
            if cached is not None:
                return cached
        k = merkle.split_point(n)
        value = merkle.node_hash(self.hash_range(begin, begin + k), self.hash_range(begin + k, end))
        if self._ranges is not None:
            self._ranges.put((begin, end), value)
        return value

    def root(self, size: int) -> bytes:
        return self.hash_range(0, size)


def append(read: TileReader, size: int, leaves: list[bytes]) -> dict[tuple[int, int], bytes]:
    """The tiles to write after appending `leaves` to a tree of `size` leaves: {(level, index): hashes}."""
    written: dict[tuple[int, int], bytes] = {}

    def current(level: int, index: int) -> bytes:
        key = (level, index)
        if key not in written:
            written[key] = read(level, index)
        return written[key]

    for offset, leaf in enumerate(leaves):
        position = size + offset  # index of this node at the current level
        value = leaf
        level = 0
        while True:
            index, slot = divmod(position, TILE_WIDTH)
            tile = current(level, index)
            if len(tile) != slot * HASH:
                raise TileError(f"tile ({level}, {index}) holds {len(tile) // HASH} hashes; expected {slot}")
            tile += value
            written[(level, index)] = tile
            if slot != TILE_WIDTH - 1:
                break
            # The tile is complete: its root is the next node one tile level up.
            value = merkle.root_of([tile[i : i + HASH] for i in range(0, len(tile), HASH)])
            position = index
            level += 1
    return written
