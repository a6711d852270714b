"""The log store over SQL: SQLite for one machine, PostgreSQL for several replicas sharing one log.

One batch is one transaction: entries, tiles and the signed head. Writers are serialised by the
database (SQLite's write lock; a PostgreSQL advisory lock), and each batch re-reads the tree size, so
several sequencers (processes, replicas) can interleave safely. Entries are looked up by id through
an index on the id's first 4 bytes (the full id is checked against the entry), which keeps storage
at about the entry's bytes plus 100 per entry.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from scitt_oci.errors import StoreError as StoreError  # defined there since #12; kept importable here
from scitt_oci.errors import StoreUnavailable
from scitt_oci.log import tiles
from scitt_oci.log.store import BatchResult, HeadSigner, Pending, StoredHead, entry_id
from scitt_oci.log.tiles import NodeCache, TileTree
from scitt_oci.scitt import merkle

SCHEMA_VERSION = 1


def _prefix(eid: bytes) -> int:
    return int.from_bytes(eid[:4], "big", signed=True)  # 4 bytes on disk; the full id is checked


class SqlStore(ABC):
    """Everything but the dialect: connections, transactions and the schema are the subclasses'."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._cache = NodeCache()
        self._ranges = NodeCache(50_000)
        self._writer_lock = threading.Lock()
        self._frontier: dict[tuple[int, int], bytes] = {}
        self._frontier_size = -1
        self._writer_nodes = NodeCache(4096)

    # ----- dialect -----
    @abstractmethod
    def _connect(self, *, read_only: bool) -> Any: ...

    @abstractmethod
    def _begin(self, conn: Any) -> None:
        """Start the writer's transaction, holding the database's write serialisation."""

    def _rollback(self, conn: Any) -> None:
        self._exec(conn, "ROLLBACK")

    def _sql(self, text: str) -> str:
        return text

    def _exec(self, conn: Any, sql: str, params: Sequence[Any] = ()) -> Any:
        return conn.execute(self._sql(sql), params)

    def _many(self, conn: Any, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        conn.executemany(self._sql(sql), rows)

    def _lost(self, conn: Any) -> bool:
        """Whether `conn` is gone (the server ended it, a failover, a proxy's idle timeout): made again."""
        return False

    def _unreachable(self, exc: Exception) -> StoreUnavailable | None:
        """`exc` as the database being out of reach (worth retrying later), or None for any other error."""
        return None

    def _reader(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None or self._lost(conn):
            conn = self._connect_or_fail(read_only=True)
            self._local.conn = conn
        return conn

    def _connect_or_fail(self, *, read_only: bool) -> Any:
        try:
            return self._connect(read_only=read_only)
        except Exception as exc:
            unreachable = self._unreachable(exc)
            if unreachable is None:
                raise
            raise unreachable from None

    def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """A read on this thread's connection; one lost since its last use is made again, once."""
        for attempt in (1, 2):
            conn = self._reader()
            try:
                rows: list[Any] = self._exec(conn, sql, params).fetchall()
                return rows
            except Exception as exc:
                unreachable = self._unreachable(exc)
                if unreachable is None:
                    raise
                if attempt == 2 or not self._lost(conn):
                    raise unreachable from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _row(self, sql: str, params: Sequence[Any] = ()) -> Any:
        rows = self._rows(sql, params)
        return rows[0] if rows else None

    def _writer_connection(self) -> Any:
        conn = getattr(self, "_writer", None)
        if conn is None or self._lost(conn):
            conn = self._writer = self._connect_or_fail(read_only=False)
        return conn

    # ----- reads -----
    def _read_tile(self, level: int, index: int) -> bytes:
        row = self._row("SELECT hashes FROM tiles WHERE level = ? AND idx = ?", (level, index))
        return bytes(row[0]) if row else b""

    def read_tiles(self, level: int, first: int, count: int) -> bytes:
        """Stored tiles `first`..`first+count-1` of `level`, concatenated, stopping at the first one absent
        or partial (the C2SP read API builds its 256-wide tiles from 16 of these)."""
        rows = self._rows(
            "SELECT idx, hashes FROM tiles WHERE level = ? AND idx >= ? AND idx < ? ORDER BY idx",
            (level, first, first + count),
        )
        out = bytearray()
        for expected, (idx, hashes) in enumerate(rows, first):
            if int(idx) != expected:
                break
            out += bytes(hashes)
            if len(hashes) < tiles.TILE_WIDTH * tiles.HASH:
                break
        return bytes(out)

    def entries(self, begin: int, end: int) -> list[bytes]:
        """The entries at leaf indexes [begin, end), as far as they are stored."""
        rows = self._rows("SELECT entry FROM entries WHERE idx >= ? AND idx < ? ORDER BY idx", (begin, end))
        return [bytes(r[0]) for r in rows]

    def tree(self) -> TileTree:
        """Over committed tiles only (reader connections), so cached nodes and ranges never go stale."""
        return TileTree(self._read_tile, self._cache, self._ranges)

    def size(self) -> int:
        row = self._row("SELECT MAX(tree_size) FROM heads")
        return int(row[0] or 0)

    @staticmethod
    def _head(row: tuple[object, ...] | None) -> StoredHead | None:
        if row is None:
            return None
        size, root, protected, signature, created = row
        return StoredHead(int(size), bytes(root), bytes(protected), bytes(signature), float(created))  # type: ignore[arg-type, call-overload]

    def head(self, tree_size: int | None = None) -> StoredHead | None:
        if tree_size is None:
            sql = "SELECT tree_size, root, protected, signature, created FROM heads ORDER BY tree_size DESC LIMIT 1"
            return self._head(self._row(sql))
        sql = "SELECT tree_size, root, protected, signature, created FROM heads WHERE tree_size = ?"
        return self._head(self._row(sql, (tree_size,)))

    def head_covering(self, index: int) -> StoredHead | None:
        sql = "SELECT tree_size, root, protected, signature, created FROM heads WHERE tree_size > ? ORDER BY tree_size LIMIT 1"
        return self._head(self._row(sql, (index,)))

    def lookup(self, eid: bytes) -> int | None:
        for idx, entry in self._rows("SELECT idx, entry FROM entries WHERE id_prefix = ?", (_prefix(eid),)):
            if entry_id(bytes(entry)) == eid:
                return int(idx)
        return None

    def _lookup_many(self, conn: Any, eids: list[bytes]) -> dict[bytes, int]:
        """The leaf indexes of those of `eids` already in the log, in one query per 500 ids."""
        found: dict[bytes, int] = {}
        wanted = set(eids)
        prefixes = sorted({_prefix(e) for e in wanted})
        for start in range(0, len(prefixes), 500):
            chunk = prefixes[start : start + 500]
            marks = ",".join("?" * len(chunk))
            sql = "SELECT idx, entry FROM entries WHERE id_prefix IN (" + marks + ")"  # noqa: S608 - placeholders only
            for idx, entry in self._exec(conn, sql, chunk):
                eid = entry_id(bytes(entry))
                if eid in wanted:
                    found[eid] = int(idx)
        return found

    def entry(self, index: int) -> bytes | None:
        row = self._row("SELECT entry FROM entries WHERE idx = ?", (index,))
        return bytes(row[0]) if row else None

    def is_pending(self, eid: bytes) -> bool:
        return self._row("SELECT 1 FROM pending WHERE id = ?", (eid,)) is not None

    def pending(self, limit: int) -> list[Pending]:
        rows = self._rows("SELECT id, entry FROM pending ORDER BY seq LIMIT ?", (limit,))
        return [Pending(bytes(i), bytes(e), stored=True) for i, e in rows]

    # ----- the one writer -----
    def commit(
        self, *, accept: Sequence[Pending], integrate: Sequence[Pending], sign: HeadSigner, now: float
    ) -> BatchResult:
        with self._writer_lock:
            for attempt in (1, 2):
                conn = self._writer_connection()
                try:
                    self._begin(conn)
                    result = self._commit(conn, accept, integrate, sign, now)
                    self._exec(conn, "COMMIT")
                    return result
                except BaseException as exc:
                    self._forget_writer_state()  # it may hold tiles and nodes of the batch that was not stored
                    unreachable = self._unreachable(exc) if isinstance(exc, Exception) else None
                    if unreachable is None or not self._lost(conn):
                        self._rollback(conn)
                        if unreachable is not None:
                            raise unreachable from None
                        raise
                    # The connection went (perhaps mid-COMMIT): the batch again on a new one. It is
                    # idempotent: entries that did get stored are found in the log and not appended twice.
                    self._writer = None
                    if attempt == 2:
                        raise unreachable from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _forget_writer_state(self) -> None:
        self._frontier = {}
        self._frontier_size = -1
        self._writer_nodes = NodeCache(4096)

    def _commit(
        self,
        conn: Any,
        accept: Sequence[Pending],
        integrate: Sequence[Pending],
        sign: HeadSigner,
        now: float,
    ) -> BatchResult:
        # Reads first, then every write of the batch at once (PostgreSQL sends them in one round trip).
        writes: list[tuple[str, list[tuple[Any, ...]]]] = []
        if accept:
            writes.append(
                (
                    "INSERT INTO pending (id, entry, received) VALUES (?, ?, ?) ON CONFLICT (id) DO NOTHING",
                    [(p.entry_id, p.entry, now) for p in accept],
                )
            )
        row = self._exec(conn, "SELECT MAX(tree_size) FROM heads").fetchone()
        size = int(row[0] or 0)
        if size != self._frontier_size:  # first commit, or another process appended: re-read the tiles
            # (its partial tiles only: complete nodes cached from committed batches never change)
            self._frontier = {}
        integrated = self._lookup_many(conn, [p.entry_id for p in integrate])  # registered before: idempotent
        fresh: list[Pending] = []
        for p in integrate:
            if p.entry_id in integrated:
                continue
            integrated[p.entry_id] = size + len(fresh)
            fresh.append(p)
        stored = [(p.entry_id,) for p in integrate if p.stored]
        if stored:
            writes.append(("DELETE FROM pending WHERE id = ?", stored))
        if not fresh:
            self._write(conn, writes)
            return BatchResult(None, integrated, size)

        frontier = self._frontier

        def read(level: int, index: int) -> bytes:
            # The writer keeps the partial tile of each level in memory: every batch appends to them.
            cached = frontier.get((level, index))
            if cached is not None:
                return cached
            r = self._exec(conn, "SELECT hashes FROM tiles WHERE level = ? AND idx = ?", (level, index)).fetchone()
            return bytes(r[0]) if r else b""

        leaves = [merkle.leaf_hash(p.entry) for p in fresh]
        written = tiles.append(read, size, leaves)
        frontier.update(written)
        new_size = size + len(fresh)
        # The writer's own node cache: it is dropped whenever a batch is not stored (see commit).
        # The root and every new leaf's inclusion path in one walk: receipts need no tile reads.
        root, paths = merkle.appended_paths(size, leaves, TileTree(read, self._writer_nodes).hash_range)
        self._frontier = {k: v for k, v in frontier.items() if len(v) < tiles.TILE_WIDTH * tiles.HASH}
        self._frontier_size = new_size
        sth = sign(new_size, root)
        writes += [
            (
                "INSERT INTO entries (idx, id_prefix, entry) VALUES (?, ?, ?)",
                [(size + i, _prefix(p.entry_id), p.entry) for i, p in enumerate(fresh)],
            ),
            (
                "INSERT INTO tiles (level, idx, hashes) VALUES (?, ?, ?) "
                "ON CONFLICT (level, idx) DO UPDATE SET hashes = excluded.hashes",
                [(level, index, hashes) for (level, index), hashes in written.items()],
            ),
            (
                "INSERT INTO heads (tree_size, root, protected, signature, created) VALUES (?, ?, ?, ?, ?)",
                [(new_size, root, sth.protected_bytes, sth.signature, now)],
            ),
        ]
        self._write(conn, writes)
        head = StoredHead(new_size, root, sth.protected_bytes, sth.signature, now, dict(enumerate(paths, size)))
        return BatchResult(head, integrated, size)

    def _write(self, conn: Any, writes: Sequence[tuple[str, Sequence[Sequence[Any]]]]) -> None:
        """The batch's writes, in order, inside its transaction."""
        for sql, rows in writes:
            self._many(conn, sql, rows)

    def close(self) -> None:
        writer = getattr(self, "_writer", None)
        if writer is not None:
            writer.close()
            self._writer = None
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
