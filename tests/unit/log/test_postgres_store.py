"""The log store on a real PostgreSQL server: same behaviour as SQLite, and several writers (replicas)
sharing one log."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from scitt_oci.log.postgres_store import PostgresStore
from scitt_oci.log.store import Pending, entry_id
from scitt_oci.scitt import merkle, receipt
from tests.helpers import key

DSN = os.environ.get("SCITT_OCI_TEST_PG_DSN", "host=127.0.0.1 user=postgres dbname=test")


def _sign(size: int, root: bytes) -> receipt.SignedTreeHead:
    return receipt.sign_tree_head(key(slot=9), issuer="https://ts", subject="log", tree_size=size, root=root)


@pytest.fixture
def schema() -> Iterator[str]:
    name = "t_" + uuid.uuid4().hex[:12]
    yield name
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


def _p(tag: str, n: int) -> Pending:
    e = f"{tag} entry {n}".encode()
    return Pending(entry_id(e), e)


def test_batches_proofs_pending_and_idempotence(schema: str) -> None:
    store = PostgresStore(DSN, schema=schema)
    entries = [_p("a", i) for i in range(300)]
    store.commit(accept=entries[250:], integrate=[], sign=_sign, now=1)
    assert store.is_pending(entries[260].entry_id) and len(store.pending(100)) == 50
    for start in range(0, 250, 37):
        store.commit(accept=[], integrate=entries[start : min(start + 37, 250)], sign=_sign, now=2)
    backlog = store.pending(100)
    assert all(p.stored for p in backlog)
    result = store.commit(accept=[], integrate=[*backlog, entries[3]], sign=_sign, now=3)
    assert result.integrated[entries[3].entry_id] == 3 and store.size() == 300 and not store.pending(10)
    leaves = [merkle.leaf_hash(p.entry) for p in entries]
    tree = store.tree()
    for index in (0, 99, 250, 299):
        head = store.head_covering(index)
        assert head is not None
        merkle.verify_inclusion(
            leaves[index],
            index,
            head.tree_size,
            merkle.inclusion_path(index, head.tree_size, tree.hash_range),
            head.root,
        )
    final = store.head()
    assert final is not None and final.root == merkle.root_of(leaves)
    assert store.lookup(entries[42].entry_id) == 42 and store.entry(42) == entries[42].entry
    store.close()


def test_replicas_writing_at_once_keep_one_consistent_log(schema: str) -> None:
    replicas = [PostgresStore(DSN, schema=schema) for _ in range(3)]
    errors: list[Exception] = []

    def write(i: int, store: PostgresStore) -> None:
        try:
            for b in range(10):
                # every replica also integrates some entries the others do: idempotent, never twice
                batch = [_p(f"r{i}", b * 5 + k) for k in range(5)] + [_p("shared", b)]
                store.commit(accept=[], integrate=batch, sign=_sign, now=float(b))
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(i, s)) for i, s in enumerate(replicas)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(f"SET search_path TO {schema}")
        entries = [bytes(e) for (e,) in conn.execute("SELECT entry FROM entries ORDER BY idx")]
        heads = list(conn.execute("SELECT tree_size, root FROM heads ORDER BY tree_size"))
    assert len(entries) == 3 * 50 + 10 == len({entry_id(e) for e in entries})
    leaves = [merkle.leaf_hash(e) for e in entries]
    for size, root in heads:
        assert merkle.root_of(leaves[:size]) == bytes(root)
    for s in replicas:
        s.close()


def test_bad_dsn_is_a_clear_error_without_the_password() -> None:
    from scitt_oci.log.sql_store import StoreError

    with pytest.raises(StoreError, match="cannot open the PostgreSQL log") as info:
        PostgresStore("host=127.0.0.1 port=1 user=x password=hunter2 connect_timeout=2", schema="s")
    assert "hunter2" not in str(info.value)


def test_c2sp_tiles_from_postgresql_rebuild_the_root(schema: str) -> None:
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from scitt_oci.log.tiled import TiledLog
    from scitt_oci.tlog import checkpoint, note, tiles

    store = PostgresStore(DSN, schema=schema)
    entries = [_p("t", i) for i in range(600)]
    store.commit(accept=[], integrate=entries, sign=_sign, now=1)
    signer = note.NoteSigner("pg.test/tlog", ed25519.Ed25519PrivateKey.generate())
    tiled = TiledLog(store, "pg.test/tlog", signer)
    opened = checkpoint.open_signed(tiled.checkpoint() or b"", [signer.verifier])

    def read(level: int, index: int) -> bytes:
        width = min(tiles.WIDTH, tiles.level_width(600, level) - index * tiles.WIDTH)
        return tiled.tile(level, index, width) or b""

    assert (
        tiles.TiledTree(read, 600).root()
        == opened.checkpoint.root
        == merkle.root_of([merkle.leaf_hash(p.entry) for p in entries])
    )
    assert tiles.decode_bundle(tiled.bundle(2, 88) or b"", 88)[0] == entries[512].entry
    store.close()
