"""RFC 9162 Merkle tree math (SHA-256): hashes, tree heads, inclusion and consistency proofs.

Proof generation takes a `RangeHasher`: a function giving the root of leaves [begin, end). An
in-memory list serves tests and small trees; the log's store answers the same question from
stored full-subtree nodes in O(log n) reads, so proofs never rebuild the tree.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

from scitt_oci.errors import ProofError

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
RangeHasher = Callable[[int, int], bytes]


def leaf_hash(entry: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def split_point(n: int) -> int:
    """The largest power of two smaller than n (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def root_of(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH over already-hashed leaves."""
    if not leaf_hashes:
        return EMPTY_ROOT
    level = list(leaf_hashes)
    # Pairing left to right with the odd node carried up gives exactly RFC 9162's MTH.
    while len(level) > 1:
        nxt = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def list_hasher(leaf_hashes: Sequence[bytes]) -> RangeHasher:
    """A `RangeHasher` over an in-memory list of leaf hashes."""

    def hash_range(begin: int, end: int) -> bytes:
        return root_of(leaf_hashes[begin:end])

    return hash_range


def _check_hash(value: bytes, what: str) -> None:
    if len(value) != HASH_SIZE:
        raise ProofError(f"{what} is {len(value)} bytes; expected {HASH_SIZE}")


def _check_size(index: int, size: int) -> None:
    if size <= 0 or not 0 <= index < size:
        raise ProofError(f"leaf index {index} is outside a tree of size {size}")


def inclusion_path(index: int, size: int, hash_range: RangeHasher) -> list[bytes]:
    """The audit path for leaf `index` in the tree of the first `size` leaves (RFC 9162 2.1.3.1), leaf to root."""
    _check_size(index, size)
    path: list[bytes] = []
    begin, end = 0, size
    while end - begin > 1:
        k = split_point(end - begin)
        if index - begin < k:
            path.append(hash_range(begin + k, end))
            end = begin + k
        else:
            path.append(hash_range(begin, begin + k))
            begin += k
    path.reverse()
    return path


def appended_paths(size: int, leaves: Sequence[bytes], hash_range: RangeHasher) -> tuple[bytes, list[list[bytes]]]:
    """The root of the tree after appending the leaf hashes `leaves` to the tree of `size` leaves, and the
    inclusion path (as `inclusion_path` gives it) of each appended leaf in that tree.

    `hash_range` answers for ranges of the first `size` leaves only. One walk for the whole batch: O(log n)
    ranges of the old tree, one node hash per appended leaf, and the paths' hashes (a leaf at a time would
    cost O(log n) ranges each)."""
    total = size + len(leaves)
    paths: list[list[bytes]] = [[] for _ in leaves]
    if not leaves:
        return hash_range(0, size) if size else EMPTY_ROOT, paths

    def walk(begin: int, end: int) -> bytes:
        # The root of [begin, end); each appended leaf in it gets its sibling at this level, deepest first.
        if end <= size:
            return hash_range(begin, end)
        if end - begin == 1:
            return leaves[begin - size]
        mid = begin + split_point(end - begin)
        left = walk(begin, mid)
        right = walk(mid, end)
        for i in range(max(begin, size) - size, mid - size):
            paths[i].append(right)
        for i in range(max(mid, size) - size, end - size):
            paths[i].append(left)
        return hashlib.sha256(b"\x01" + left + right).digest()

    return walk(0, total), paths


def root_from_inclusion(leaf: bytes, index: int, size: int, path: Sequence[bytes]) -> bytes:
    """The root an inclusion path leads to (RFC 9162 2.1.3.2); `ProofError` when the path cannot fit."""
    _check_size(index, size)
    _check_hash(leaf, "leaf hash")
    expected = _inclusion_length(index, size)
    if len(path) != expected:
        raise ProofError(f"inclusion path has {len(path)} hashes; leaf {index} of {size} needs {expected}")
    fn, sn, r = index, size - 1, leaf
    sha256 = hashlib.sha256
    for p in path:
        if type(p) is not bytes or len(p) != HASH_SIZE:
            raise ProofError(f"inclusion path hashes must be {HASH_SIZE}-byte strings")
        if fn & 1 or fn == sn:
            r = sha256(b"\x01" + p + r).digest()
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = sha256(b"\x01" + r + p).digest()
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError(f"inclusion path is too short for leaf {index} of {size}")
    return r


def _inclusion_length(index: int, size: int) -> int:
    inner = (index ^ (size - 1)).bit_length()
    border = bin(index >> inner).count("1")
    return inner + border


def verify_inclusion(leaf: bytes, index: int, size: int, path: Sequence[bytes], root: bytes) -> None:
    """Raise `ProofError` unless `path` proves `leaf` at `index` in the tree of `size` with `root`."""
    _check_hash(root, "root")
    computed = root_from_inclusion(leaf, index, size, path)
    if computed != root:
        raise ProofError(f"inclusion path leads to root {computed.hex()}, not {root.hex()}")


def consistency_path(size1: int, size2: int, hash_range: RangeHasher) -> list[bytes]:
    """The consistency proof from the tree of `size1` to that of `size2` (RFC 9162 2.1.4.1)."""
    if not 0 < size1 <= size2:
        raise ProofError(f"no consistency proof from size {size1} to size {size2}")
    if size1 == size2:
        return []
    proof: list[bytes] = []
    begin, end, complete = 0, size2, True
    m = size1
    while True:
        n = end - begin
        if m == n:
            if not complete:
                proof.append(hash_range(begin, end))
            break
        k = split_point(n)
        if m <= k:
            proof.append(hash_range(begin + k, end))
            end = begin + k
        else:
            proof.append(hash_range(begin, begin + k))
            begin += k
            m -= k
            complete = False
    proof.reverse()
    return proof


def root_from_consistency(size1: int, size2: int, proof: Sequence[bytes], root1: bytes) -> bytes:
    """The new root a consistency proof leads to, after checking it also leads to `root1` (RFC 9162 2.1.4.2)."""
    _check_consistency_sizes(size1, size2, proof)
    if size1 == size2:
        return root1
    _check_hash(root1, "old root")
    if not proof:
        raise ProofError(f"consistency proof from {size1} to {size2} is empty")
    for c in proof:
        if len(c) != HASH_SIZE:
            raise ProofError(f"consistency proof hash is {len(c)} bytes; expected {HASH_SIZE}")
    path = list(proof)
    if size1 & (size1 - 1) == 0:  # size1 is a power of two: its root is the first node
        path.insert(0, root1)
    old, new = _consistency_roots(size1, size2, path)
    if old != root1:
        raise ProofError(f"consistency proof leads to old root {old.hex()}, not {root1.hex()}")
    return new


def _check_consistency_sizes(size1: int, size2: int, proof: Sequence[bytes]) -> None:
    if size1 < 0 or size2 < 0:
        raise ProofError("tree sizes cannot be negative")
    if size1 > size2:
        raise ProofError(f"tree size went down from {size1} to {size2}")
    if size1 == 0:
        raise ProofError("an empty tree has no consistency proof")
    if size1 == size2 and proof:
        raise ProofError(f"trees of equal size {size1} need an empty proof, got {len(proof)} hashes")


def _consistency_roots(size1: int, size2: int, path: Sequence[bytes]) -> tuple[bytes, bytes]:
    """The (old, new) roots `path` (the proof, with the old root first when `size1` is a power of two) leads to."""
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError(f"consistency proof from {size1} to {size2} has too many hashes")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError(f"consistency proof from {size1} to {size2} has too few hashes")
    return fr, sr


def verify_consistency(size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes) -> None:
    """Raise `ProofError` unless `proof` shows the tree of `size2` extends the tree of `size1`."""
    computed = root_from_consistency(size1, size2, proof, root1)
    if computed != root2:
        if size1 == size2:
            raise ProofError(f"trees of size {size1} have different roots {root1.hex()} and {root2.hex()}")
        raise ProofError(f"consistency proof leads to new root {computed.hex()}, not {root2.hex()}")
