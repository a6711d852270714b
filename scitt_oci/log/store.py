"""The log's storage interface. SQLite implements it for one machine; PostgreSQL will for scale-out.

What a store guarantees: a batch (entries, tiles, and the signed tree head over them) is stored
atomically, so every stored tree head describes a tree whose every leaf and tile is stored, and
each head extends the one before it. Pending registrations are durable before they are
acknowledged and leave the pending list in the same transaction that integrates them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from scitt_oci.log.tiles import TileTree
from scitt_oci.scitt.receipt import SignedTreeHead


def entry_id(entry: bytes) -> bytes:
    """The content-derived id of a log entry (SHA-256 of the entry bytes)."""
    return hashlib.sha256(entry).digest()


@dataclass(frozen=True)
class StoredHead:
    tree_size: int
    root: bytes
    protected: bytes
    signature: bytes
    created: float
    # The inclusion paths of the leaves this head's batch appended (leaf index -> path), when the head was
    # just made by this process's commit; empty for a head read back from the store.
    paths: Mapping[int, Sequence[bytes]] = field(default_factory=dict, compare=False, repr=False)

    def signed(self) -> SignedTreeHead:
        return SignedTreeHead(self.protected, self.signature, self.tree_size, self.root)


@dataclass(frozen=True)
class Pending:
    entry_id: bytes
    entry: bytes
    stored: bool = False  # already in the pending list (accepted earlier), so integration must remove it


# Signs the new tree head of a batch: (tree size, root) -> the signed head.
HeadSigner = Callable[[int, bytes], SignedTreeHead]


@dataclass(frozen=True)
class BatchResult:
    head: StoredHead | None  # None when nothing was integrated
    integrated: dict[bytes, int]  # entry id -> leaf index, for this batch's entries
    appended_from: int = 0  # the tree size before this batch: indexes from here on are covered by `head`

    def head_of(self, index: int) -> StoredHead | None:
        """The head that first covers `index`, when this batch appended it (None for an older entry)."""
        return self.head if self.head is not None and index >= self.appended_from else None


class LogStore(Protocol):
    def size(self) -> int:
        """The number of integrated entries (the latest head's tree size)."""

    def head(self, tree_size: int | None = None) -> StoredHead | None:
        """The latest signed tree head, or the one of exactly `tree_size`."""

    def head_covering(self, index: int) -> StoredHead | None:
        """The head of the batch that integrated leaf `index` (the first head whose tree contains it)."""

    def lookup(self, entry_id: bytes) -> int | None:
        """The leaf index of an integrated entry."""

    def entry(self, index: int) -> bytes | None:
        """The entry bytes at leaf `index`."""

    def is_pending(self, entry_id: bytes) -> bool:
        """Whether the entry was accepted and awaits integration."""

    def pending(self, limit: int) -> list[Pending]:
        """The oldest pending entries."""

    def read_tiles(self, level: int, first: int, count: int) -> bytes:
        """Stored hash tiles `first`.. of `level` (16 hashes each), concatenated up to the first partial one."""

    def entries(self, begin: int, end: int) -> list[bytes]:
        """The entries at leaf indexes [begin, end)."""

    def tree(self) -> TileTree:
        """Root and proof computations over the stored tiles (for the calling thread)."""

    def commit(
        self,
        *,
        accept: Sequence[Pending],
        integrate: Sequence[Pending],
        sign: HeadSigner,
        now: float,
    ) -> BatchResult:
        """In one transaction: store `accept` as pending, append `integrate` (taking any of them off
        the pending list), update the tiles, and store the head `sign` makes for the new tree."""

    def close(self) -> None: ...
