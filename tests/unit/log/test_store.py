"""The SQLite store and its tiles: roots and proofs agree with the in-memory tree for any batching."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scitt_oci.log import tiles
from scitt_oci.log.sqlite_store import SqliteStore, StoreError
from scitt_oci.log.store import Pending, entry_id
from scitt_oci.scitt import merkle, receipt
from tests.helpers import key


def _sign(size: int, root: bytes) -> receipt.SignedTreeHead:
    return receipt.sign_tree_head(key(slot=9), issuer="https://ts", subject="log", tree_size=size, root=root)


def _fill(store: SqliteStore, entries: list[bytes], batches: list[int]) -> None:
    i = 0
    for n in batches:
        store.commit(accept=[], integrate=[Pending(entry_id(e), e) for e in entries[i : i + n]], sign=_sign, now=0)
        i += n


@settings(max_examples=25, deadline=None)
@given(batches=st.lists(st.integers(1, 70), min_size=1, max_size=12))
def test_tiles_agree_with_the_tree_for_any_batching(
    tmp_path_factory: pytest.TempPathFactory, batches: list[int]
) -> None:
    store = SqliteStore(tmp_path_factory.mktemp("db") / "log.db", synchronous="NORMAL")
    entries = [f"entry {i}".encode() for i in range(sum(batches))]
    _fill(store, entries, batches)
    leaves = [merkle.leaf_hash(e) for e in entries]
    tree = store.tree()
    sizes = [sum(batches[: i + 1]) for i in range(len(batches))]
    for size in sizes:
        head = store.head(size)
        assert head is not None and head.root == merkle.root_of(leaves[:size])
    rng = random.Random(len(entries))
    for _ in range(10):
        index = rng.randrange(len(entries))
        head = store.head_covering(index)
        assert head is not None and head.tree_size == min(s for s in sizes if s > index)
        path = merkle.inclusion_path(index, head.tree_size, tree.hash_range)
        merkle.verify_inclusion(leaves[index], index, head.tree_size, path, head.root)
        old = rng.choice(sizes)
        if old <= head.tree_size:
            proof = merkle.consistency_path(old, head.tree_size, tree.hash_range)
            merkle.verify_consistency(old, head.tree_size, proof, merkle.root_of(leaves[:old]), head.root)
    store.close()


def test_lookup_pending_and_idempotent_integration(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "log.db")
    a, b = Pending(entry_id(b"a"), b"a"), Pending(entry_id(b"b"), b"b")
    store.commit(accept=[a, b], integrate=[], sign=_sign, now=1)
    assert store.is_pending(a.entry_id) and store.size() == 0
    assert [p.entry_id for p in store.pending(10)] == [a.entry_id, b.entry_id]
    a, b = Pending(a.entry_id, a.entry, stored=True), Pending(b.entry_id, b.entry, stored=True)
    result = store.commit(accept=[], integrate=[a, b, a], sign=_sign, now=2)
    assert result.integrated == {a.entry_id: 0, b.entry_id: 1} and store.size() == 2
    assert not store.is_pending(a.entry_id)
    again = store.commit(accept=[], integrate=[b], sign=_sign, now=3)
    assert again.head is None and again.integrated == {b.entry_id: 1} and store.size() == 2
    assert store.lookup(b.entry_id) == 1 and store.lookup(entry_id(b"zzz")) is None
    assert store.entry(0) == b"a"


def test_a_failed_signature_rolls_the_whole_batch_back(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "log.db")
    _fill(store, [b"x", b"y"], [2])

    def broken(size: int, root: bytes) -> receipt.SignedTreeHead:
        raise RuntimeError("HSM unavailable")

    with pytest.raises(RuntimeError):
        store.commit(accept=[], integrate=[Pending(entry_id(b"z"), b"z")], sign=broken, now=0)
    assert store.size() == 2 and store.lookup(entry_id(b"z")) is None
    _fill(store, [b"z"], [1])
    assert store.tree().root(3) == merkle.root_of([merkle.leaf_hash(e) for e in (b"x", b"y", b"z")])


def test_tile_append_refuses_a_damaged_frontier() -> None:
    with pytest.raises(tiles.TileError, match="holds 0 hashes; expected 3"):
        tiles.append(lambda level, index: b"", 3, [b"\x00" * 32])


def test_not_a_log_database(tmp_path: Path) -> None:
    (tmp_path / "log.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="cannot open the log database"):
        SqliteStore(tmp_path / "log.db")


def test_storage_per_entry_is_the_entry_plus_under_100_bytes(tmp_path: Path) -> None:
    import sqlite3

    store = SqliteStore(tmp_path / "log.db", synchronous="NORMAL")
    entries = [bytes([i % 256]) * 300 + i.to_bytes(4, "big") for i in range(20_000)]
    _fill(store, entries, [1000] * 20)
    store.close()
    conn = sqlite3.connect(tmp_path / "log.db")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.execute("VACUUM")
    conn.close()
    overhead = ((tmp_path / "log.db").stat().st_size - sum(map(len, entries))) / len(entries)
    assert overhead < 100, f"{overhead:.1f} bytes per entry beyond the entry itself"


def test_database_files_are_private_and_an_open_one_is_tightened(tmp_path: Path) -> None:
    import stat

    store = SqliteStore(tmp_path / "log.db", synchronous="NORMAL")
    _fill(store, [b"entry-1", b"entry-2"], [2])
    files = [p for p in tmp_path.iterdir() if p.name.startswith("log.db")]
    assert {p.name for p in files} >= {"log.db", "log.db-wal", "log.db-shm"}
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in files)
    (tmp_path / "old.db").touch(mode=0o644)
    (tmp_path / "old.db").chmod(0o644)
    SqliteStore(tmp_path / "old.db", synchronous="NORMAL")
    assert stat.S_IMODE((tmp_path / "old.db").stat().st_mode) == 0o600
