"""The proofs a batch's commit computes for its receipts are the ones the log proves later, byte for byte."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from scitt_oci.cose import algorithms, cbor, headers, keys
from scitt_oci.log.sqlite_store import SqliteStore
from scitt_oci.log.store import Pending, entry_id
from scitt_oci.scitt import merkle, receipt


def test_appended_paths_are_the_inclusion_paths_and_the_root() -> None:
    rng = random.Random(13)
    for _ in range(300):
        size, added = rng.randrange(0, 300), rng.randrange(0, 70)
        leaves = [os.urandom(32) for _ in range(size + added)]
        root, paths = merkle.appended_paths(size, leaves[size:], merkle.list_hasher(leaves[:size]))
        assert root == merkle.root_of(leaves)
        assert len(paths) == added
        for offset, path in enumerate(paths):
            assert path == merkle.inclusion_path(size + offset, size + added, merkle.list_hasher(leaves))


def test_hand_encoded_inclusion_receipt_is_the_generic_encoding() -> None:
    key = keys.generate(algorithms.by_name("ES256"))
    rng = random.Random(4)
    for size in (1, 2, 23, 24, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**40):
        sth = receipt.sign_tree_head(key, issuer="https://ts", subject="log", tree_size=size, root=os.urandom(32))
        batch, expected = [], []
        for index in sorted({0, size - 1, rng.randrange(size)}):
            path = [os.urandom(32) for _ in range(rng.randrange(0, 40))]
            proof = cbor.dumps([sth.tree_size, index, list(path)])
            generic = sth.message({headers.VDP: {headers.VDP_INCLUSION: [proof]}}).encode()
            assert receipt.inclusion_receipt(sth, index, path) == generic
            batch.append((index, path))
            expected.append(generic)
        assert receipt.inclusion_receipts(sth, batch) == expected  # a batch's receipts, made together


def test_commit_hands_back_the_paths_the_stored_tiles_prove(tmp_path: Path) -> None:
    key = keys.generate(algorithms.by_name("ES256"))

    def sign(size: int, root: bytes) -> receipt.SignedTreeHead:
        return receipt.sign_tree_head(key, issuer="https://ts", subject="log", tree_size=size, root=root)

    store = SqliteStore(tmp_path / "log.db")
    try:
        n = 0
        for batch in (1, 1, 3, 16, 15, 40, 1, 250):  # across tile boundaries, and partial tiles on every level
            pending = [Pending(entry_id(e), e) for e in (os.urandom(40) for _ in range(batch))]
            result = store.commit(accept=[], integrate=pending, sign=sign, now=0.0)
            head = result.head
            assert head is not None and head.tree_size == n + batch
            assert sorted(head.paths) == list(range(n, n + batch))
            reopened = SqliteStore(tmp_path / "log.db")  # a fresh process: proofs from the stored tiles only
            tree = reopened.tree()
            assert head.root == tree.root(head.tree_size)
            for p in pending:
                index = result.integrated[p.entry_id]
                assert head.paths[index] == merkle.inclusion_path(index, head.tree_size, tree.hash_range)
                merkle.verify_inclusion(merkle.leaf_hash(p.entry), index, head.tree_size, head.paths[index], head.root)
            reopened.close()
            n += batch
        latest = store.head()
        assert latest is not None and latest.tree_size == n and not latest.paths  # read back: no paths
    finally:
        store.close()


def test_two_writers_interleaving_keep_roots_and_paths_right(tmp_path: Path) -> None:
    """Two stores on one database (two `serve` workers): each batch re-reads what the other appended,
    and the complete nodes each writer keeps from its own earlier batches stay right."""
    key = keys.generate(algorithms.by_name("ES256"))

    def sign(size: int, root: bytes) -> receipt.SignedTreeHead:
        return receipt.sign_tree_head(key, issuer="https://ts", subject="log", tree_size=size, root=root)

    writers = [SqliteStore(tmp_path / "log.db"), SqliteStore(tmp_path / "log.db")]
    rng = random.Random(7)
    leaves: list[bytes] = []
    try:
        for turn in range(60):
            entries = [os.urandom(30) for _ in range(rng.choice((1, 2, 5, 16, 17, 33)))]
            result = writers[rng.randrange(2) if turn > 3 else turn % 2].commit(
                accept=[], integrate=[Pending(entry_id(e), e) for e in entries], sign=sign, now=0.0
            )
            leaves += [merkle.leaf_hash(e) for e in entries]
            head = result.head
            assert head is not None and head.tree_size == len(leaves)
            assert head.root == merkle.root_of(leaves)
            for index in range(len(leaves) - len(entries), len(leaves)):
                assert head.paths[index] == merkle.inclusion_path(index, len(leaves), merkle.list_hasher(leaves))
    finally:
        for w in writers:
            w.close()


def test_a_write_refused_by_postgresql_rolls_the_whole_batch_back() -> None:
    """PostgreSQL sends a batch's writes in one pipeline: one refused (here a NULL signature) stores none
    of them, and the next batch is stored on the same connection as if the first had never run."""
    import uuid

    import psycopg

    from scitt_oci.log.postgres_store import PostgresStore

    dsn = os.environ.get("SCITT_OCI_TEST_PG_DSN", "host=127.0.0.1 user=postgres dbname=test")
    schema = "t_" + uuid.uuid4().hex[:12]
    key = keys.generate(algorithms.by_name("ES256"))

    def sign(size: int, root: bytes) -> receipt.SignedTreeHead:
        return receipt.sign_tree_head(key, issuer="https://ts", subject="log", tree_size=size, root=root)

    def unsigned(size: int, root: bytes) -> receipt.SignedTreeHead:
        return receipt.SignedTreeHead(sign(size, root).protected_bytes, None, size, root)  # type: ignore[arg-type]

    store = PostgresStore(dsn, schema=schema)
    try:
        first = [Pending(entry_id(e), e) for e in (b"a", b"b", b"c")]
        store.commit(accept=[], integrate=first, sign=sign, now=0.0)
        later = [Pending(entry_id(e), e) for e in (b"d", b"e")]
        waiting = Pending(entry_id(b"w"), b"w")
        with pytest.raises(psycopg.Error):
            store.commit(accept=[waiting], integrate=later, sign=unsigned, now=0.0)
        assert store.size() == 3 and store.lookup(later[0].entry_id) is None and not store.is_pending(waiting.entry_id)
        result = store.commit(accept=[], integrate=later, sign=sign, now=0.0)
        entries = [b"a", b"b", b"c", b"d", b"e"]
        assert result.head is not None and result.head.root == merkle.root_of([merkle.leaf_hash(e) for e in entries])
        assert store.tree().root(5) == result.head.root and store.lookup(later[1].entry_id) == 4
    finally:
        store.close()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
