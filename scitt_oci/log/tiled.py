"""The log as a C2SP tiled log (c2sp.org/tlog-tiles): a signed-note checkpoint over the same RFC 9162
tree the COSE receipts sign, 256-wide hash tiles and entry bundles built from the stored 16-wide tiles.

A C2SP level-L tile N is 16 consecutive stored tiles of level 2L (both hold subtree roots of height
8L), so nothing is stored twice. Only sizes that a stored (signed) tree head covers are served.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from scitt_oci.log import tiles as stored_tiles
from scitt_oci.log.store import LogStore
from scitt_oci.lru import LruCache
from scitt_oci.tlog import checkpoint as cp_mod
from scitt_oci.tlog import tiles
from scitt_oci.tlog.note import NoteSigner, Signature

PER_TILE = tiles.WIDTH // stored_tiles.TILE_WIDTH  # 16 stored tiles make one C2SP tile
assert PER_TILE * stored_tiles.TILE_WIDTH == tiles.WIDTH


class TlogSource(Protocol):
    """What the /tlog/ read API serves (the log itself, or a mirror of another one)."""

    def checkpoint(self) -> bytes | None:
        """The signed checkpoint note to publish, or None while there is none."""

    def tile(self, level: int, index: int, width: int) -> bytes | None:
        """Hash tile (level, index) of `width` hashes, or None when the published tree does not hold it."""

    def bundle(self, index: int, width: int) -> bytes | None:
        """Entry bundle `index` of `width` entries, or None when the published tree does not hold it."""

    def vkey(self) -> str:
        """The note verifier key of the checkpoint's signer."""


# Extra signature lines (witness cosignatures) for a checkpoint: (size, note text) -> lines, and the
# size to publish given the latest one (a witness quorum may hold publication back).
Cosignatures = Callable[[int, bytes], list[Signature]]


class TiledLog:
    def __init__(
        self,
        store: LogStore,
        origin: str,
        signer: NoteSigner,
        *,
        max_entry_bytes: int = tiles.MAX_ENTRY,
    ) -> None:
        self.store = store
        self.origin = origin
        self.signer = signer
        self.max_entry_bytes = max_entry_bytes
        self._notes: LruCache[int, bytes] = LruCache(64)
        # Set by the witness client when a quorum is configured: the size to publish and its cosignatures.
        self.publish_size: Callable[[int], int] | None = None
        self.cosignatures: Cosignatures | None = None

    def vkey(self) -> str:
        return self.signer.verifier.vkey

    def checkpoint_at(self, size: int) -> cp_mod.Checkpoint | None:
        head = self.store.head(size)
        if head is None:
            return None
        return cp_mod.Checkpoint(self.origin, head.tree_size, head.root)

    def signed_checkpoint(self, size: int) -> bytes | None:
        """The log's own signed note for a stored tree head (Ed25519 is deterministic: the same bytes
        whichever worker signs)."""
        cached = self._notes.get(size)
        if cached is not None:
            return cached
        cp = self.checkpoint_at(size)
        if cp is None:
            return None
        data = cp_mod.sign(cp, self.signer).encode()
        self._notes.put(size, data)
        return data

    def checkpoint(self) -> bytes | None:
        latest = self.store.size()
        if latest == 0:
            return None
        size = self.publish_size(latest) if self.publish_size else latest
        cp = self.checkpoint_at(size)
        data = self.signed_checkpoint(size)
        if cp is None or data is None or self.cosignatures is None:
            return data
        return data + "".join(s.line() for s in self.cosignatures(size, cp.text())).encode()

    def _published(self) -> int:
        return self.store.size()

    def tile(self, level: int, index: int, width: int) -> bytes | None:
        need = index * tiles.WIDTH + width
        if tiles.level_width(self._published(), level) < need:
            return None
        data = self.store.read_tiles(2 * level, index * PER_TILE, PER_TILE)[: width * tiles.HASH]
        return data if len(data) == width * tiles.HASH else None

    def bundle(self, index: int, width: int) -> bytes | None:
        first = index * tiles.WIDTH
        if self._published() < first + width:
            return None
        entries = self.store.entries(first, first + width)
        if len(entries) != width:
            return None
        return tiles.encode_bundle(entries)
