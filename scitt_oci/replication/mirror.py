"""A verified copy of another service's C2SP tiled log (`scitt-oci mirror`).

One pass: fetch the source's checkpoint and verify its note signature (and a witness quorum when a
policy is given); fetch the hash tiles that changed since the checkpoint held and the new entry
bundles; rebuild the root from the tiles and check it is the signed root; check the tree held is a
prefix of the new one (consistency); then stream the new level-0 tiles (each checked against the
verified level above) and entry bundles (each entry checked against its level-0 hash) in bounded
batches, each committed in its own transaction as *staged* state that readers do not see (entries
beyond the held size, tiles in `staged_tiles`). Only the final transaction moves the tiles into place
and stores the checkpoint as received. A SIGKILL keeps the committed batches: the next pass checks
that the source's new tree extends the checkpoint they were verified against and resumes after them.
One pass grows the staged tree by at most `max_growth` entries, so a checkpoint claiming a huge size
costs a bounded pass; later passes continue.

A fork is a checkpoint of a smaller size than the one held, or one whose tree does not extend the tree
held (same size with another root, or a different prefix). Both checkpoints and the consistency proof
computed from the source's own tiles are kept as evidence (table `forks` and files under
`<data-dir>/evidence/`), and the mirror refuses to go on until an operator looks.
"""

from __future__ import annotations

import base64
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from scitt_oci import localdb
from scitt_oci.errors import ForkDetected as ForkDetected  # defined there since #12; kept importable here
from scitt_oci.errors import MirrorError, ScittOciError
from scitt_oci.replication.fetch import TlogClient
from scitt_oci.scitt import merkle
from scitt_oci.tlog import checkpoint as cp_mod
from scitt_oci.tlog import tiles
from scitt_oci.tlog.checkpoint import Checkpoint
from scitt_oci.tlog.note import Verifier
from scitt_oci.tlog.policy import Policy

log = logging.getLogger("scitt_oci.mirror")

DB_NAME = "mirror.db"
DEFAULT_MAX_GROWTH = 1 << 20  # entries one pass may stage; a larger claim takes several passes
BATCH_BYTES = 8 << 20  # a batch commits once it holds this many entry bytes...
BATCH_ENTRIES = 4096  # ...or this many entries
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS checkpoints (size INTEGER PRIMARY KEY, root BLOB NOT NULL, note BLOB NOT NULL,
                                        received REAL NOT NULL);
CREATE TABLE IF NOT EXISTS tiles (level INTEGER NOT NULL, idx INTEGER NOT NULL, hashes BLOB NOT NULL,
                                  PRIMARY KEY (level, idx)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS entries (idx INTEGER PRIMARY KEY, entry BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS staged_tiles (level INTEGER NOT NULL, idx INTEGER NOT NULL, hashes BLOB NOT NULL,
                                         PRIMARY KEY (level, idx)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS forks (id INTEGER PRIMARY KEY AUTOINCREMENT, detected REAL NOT NULL, reason TEXT NOT NULL,
                                  held_note BLOB NOT NULL, new_note BLOB NOT NULL, evidence TEXT NOT NULL);
"""


@dataclass(frozen=True)
class Held:
    size: int
    root: bytes
    note: bytes


class MirrorStore:
    """The mirror's SQLite database: tiles, entries, the checkpoints as received, forks seen."""

    def __init__(self, data_dir: Path) -> None:
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.data_dir = data_dir
        self.path = data_dir / DB_NAME
        self._local = localdb.open_private(self.path)
        with self._conn() as conn:
            conn.executescript(_SCHEMA)

    def _conn(self) -> sqlite3.Connection:
        return localdb.connection(self._local, self.path)

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def meta(self, key: str) -> str | None:
        row = self._conn().execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return str(row[0]) if row else None

    def held(self) -> Held | None:
        row = self._conn().execute("SELECT size, root, note FROM checkpoints ORDER BY size DESC LIMIT 1").fetchone()
        return Held(int(row[0]), bytes(row[1]), bytes(row[2])) if row else None

    def tile(self, level: int, index: int) -> bytes:
        row = self._conn().execute("SELECT hashes FROM tiles WHERE level = ? AND idx = ?", (level, index)).fetchone()
        return bytes(row[0]) if row else b""

    def entries(self, begin: int, end: int) -> list[bytes]:
        rows = (
            self._conn()
            .execute("SELECT entry FROM entries WHERE idx >= ? AND idx < ? ORDER BY idx", (begin, end))
            .fetchall()
        )
        return [bytes(r[0]) for r in rows]

    def forks(self) -> list[tuple[int, str, str]]:
        rows = self._conn().execute("SELECT id, reason, evidence FROM forks ORDER BY id").fetchall()
        return [(int(i), str(r), str(e)) for i, r, e in rows]

    def commit(
        self,
        cp: Checkpoint,
        note: bytes,
        new_tiles: dict[tuple[int, int], bytes],
        entries: list[tuple[int, bytes]],
        meta: dict[str, str],
    ) -> None:
        """The final transaction: the staged level-0 tiles and `new_tiles` move into place and the
        checkpoint is stored; the checkpoint must extend the one held.
        `meta` (source and key) is bound on the first commit, so a failed first pass binds nothing."""
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", list(meta.items()))
            row = conn.execute("SELECT MAX(size) FROM checkpoints").fetchone()
            if row[0] is not None and int(row[0]) > cp.size:
                raise MirrorError(f"another mirror process stored size {row[0]} meanwhile; not storing {cp.size}")
            conn.executemany(
                "INSERT INTO tiles (level, idx, hashes) VALUES (?, ?, ?) "
                "ON CONFLICT (level, idx) DO UPDATE SET hashes = excluded.hashes",
                [(lv, ix, h) for (lv, ix), h in new_tiles.items()],
            )
            conn.executemany("INSERT OR IGNORE INTO entries (idx, entry) VALUES (?, ?)", entries)
            conn.execute(
                "INSERT INTO tiles (level, idx, hashes) SELECT level, idx, hashes FROM staged_tiles WHERE true "
                "ON CONFLICT (level, idx) DO UPDATE SET hashes = excluded.hashes"
            )
            conn.execute("DELETE FROM staged_tiles")
            conn.execute("DELETE FROM meta WHERE key = 'pending_note'")
            conn.execute(
                "INSERT OR IGNORE INTO checkpoints (size, root, note, received) VALUES (?, ?, ?, ?)",
                (cp.size, cp.root, note, time.time()),
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def staged_end(self, held_size: int) -> int:
        """One past the last entry staged beyond `held_size` (batches are committed in index order)."""
        row = self._conn().execute("SELECT MAX(idx) FROM entries WHERE idx >= ?", (held_size,)).fetchone()
        return held_size if row[0] is None else int(row[0]) + 1

    def staged_tile(self, index: int) -> bytes:
        row = self._conn().execute("SELECT hashes FROM staged_tiles WHERE level = 0 AND idx = ?", (index,)).fetchone()
        return bytes(row[0]) if row else b""

    def commit_batch(
        self,
        held_size: int,
        pending_note: bytes,
        level0: list[tuple[int, bytes]],
        entries: list[tuple[int, bytes]],
        meta: dict[str, str],
    ) -> None:
        """One batch of verified level-0 tiles and entries, staged (not served) with the checkpoint they
        were verified against."""
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            row = conn.execute("SELECT MAX(size) FROM checkpoints").fetchone()
            if int(row[0] or 0) != held_size:
                raise MirrorError(
                    f"another mirror process stored size {row[0]} meanwhile; not staging past {held_size}"
                )
            conn.executemany("INSERT OR IGNORE INTO meta (key, value) VALUES (?, ?)", list(meta.items()))
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('pending_note', ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (pending_note.decode(),),
            )
            conn.executemany(
                "INSERT INTO staged_tiles (level, idx, hashes) VALUES (0, ?, ?) "
                "ON CONFLICT (level, idx) DO UPDATE SET hashes = excluded.hashes",
                level0,
            )
            conn.executemany("INSERT OR REPLACE INTO entries (idx, entry) VALUES (?, ?)", entries)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def record_fork(self, reason: str, held_note: bytes, new_note: bytes, evidence: dict[str, object]) -> Path:
        """Keep the evidence (database row and files) and return its folder."""
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            cur = conn.execute(
                "INSERT INTO forks (detected, reason, held_note, new_note, evidence) VALUES (?, ?, ?, ?, ?)",
                (time.time(), reason, held_note, new_note, json.dumps(evidence)),
            )
            fork_id = int(cur.lastrowid or 0)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        folder = self.data_dir / "evidence" / f"fork-{fork_id}"
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        (folder / "held.checkpoint").write_bytes(held_note)
        (folder / "new.checkpoint").write_bytes(new_note)
        (folder / "evidence.json").write_text(json.dumps({"reason": reason, **evidence}, indent=2) + "\n")
        return folder


class MirrorSource:
    """The /tlog/ read API of a mirror: the source's checkpoint as received, and the tiles held."""

    def __init__(self, store: MirrorStore) -> None:
        self.store = store

    def checkpoint(self) -> bytes | None:
        held = self.store.held()
        return held.note if held else None

    def _size(self) -> int:
        held = self.store.held()
        return held.size if held else 0

    def tile(self, level: int, index: int, width: int) -> bytes | None:
        if tiles.level_width(self._size(), level) < index * tiles.WIDTH + width:
            return None
        data = self.store.tile(level, index)[: width * tiles.HASH]
        return data if len(data) == width * tiles.HASH else None

    def bundle(self, index: int, width: int) -> bytes | None:
        first = index * tiles.WIDTH
        if self._size() < first + width:
            return None
        entries = self.store.entries(first, first + width)
        return tiles.encode_bundle(entries) if len(entries) == width else None

    def vkey(self) -> str:
        return self.store.meta("vkey") or ""


class _SourceTree:
    """The source's hash tiles of its tree of `size`, read on demand. `raw` is any tile as served (for
    rebuilding the root: a partial tile's hashes all enter the root, so a matching root vouches for
    them); `verified` checks a full tile against its hash in the verified tile above it. Only tiles of
    levels 1 and up are kept (a pass over n new entries holds n/65536 of them)."""

    def __init__(self, client: TlogClient, size: int) -> None:
        self.client = client
        self.size = size
        self._raw: dict[tuple[int, int], bytes] = {}
        self._verified: dict[tuple[int, int], bytes] = {}

    def _width(self, level: int, index: int) -> int:
        width = min(tiles.WIDTH, tiles.level_width(self.size, level) - index * tiles.WIDTH)
        if width <= 0:
            raise MirrorError(f"tile {tiles.tile_path(level, index)} is outside the source's tree of {self.size}")
        return width

    def raw(self, level: int, index: int) -> bytes:
        key = (level, index)
        if key not in self._raw:
            width = self._width(level, index)
            data = self.client.tile(level, index, width)
            if width < tiles.WIDTH or level > 0:
                self._raw[key] = data
            return data
        return self._raw[key]

    def verified(self, level: int, index: int) -> bytes:
        key = (level, index)
        if key in self._verified:
            return self._verified[key]
        width = self._width(level, index)
        if width < tiles.WIDTH:
            if key not in self._raw:  # a partial tile enters the root; the root check read it
                raise MirrorError(f"tile {tiles.tile_path(level, index, width)} was not part of the root check")
            return self._raw[key]
        data = self._raw.get(key) or self.client.tile(level, index, width)
        above = tiles.split_hashes(self.verified(level + 1, index // tiles.WIDTH))
        if tiles.tile_root(data) != above[index % tiles.WIDTH]:
            raise MirrorError(f"the source's tile {tiles.tile_path(level, index)} does not match the level above it")
        if level > 0:
            self._verified[key] = data
        return data


def _b64(h: bytes) -> str:
    return base64.b64encode(h).decode()


class Mirror:
    def __init__(
        self,
        store: MirrorStore,
        client: TlogClient,
        vkey: Verifier,
        *,
        policy: Policy | None = None,
        on_fork: Callable[[], None] = lambda: None,
        max_growth: int = DEFAULT_MAX_GROWTH,
    ) -> None:
        if max_growth < 1:
            raise MirrorError("the growth per pass must be at least one entry")
        self.max_growth = max_growth
        self.store = store
        self.client = client
        self.vkey = vkey
        self.policy = policy
        self.on_fork = on_fork
        source, held_key = store.meta("source"), store.meta("vkey")
        if held_key is not None and held_key != vkey.vkey:
            raise MirrorError(f"{store.path} mirrors the log of key {held_key}, not {vkey.vkey}")
        if source is not None and source != client.prefix:
            raise MirrorError(f"{store.path} mirrors {source}, not {client.prefix}")

    def check_no_fork(self) -> None:
        forks = self.store.forks()
        if forks:
            fid, reason, _ = forks[-1]
            folder = self.store.data_dir / "evidence" / f"fork-{fid}"
            raise ForkDetected(f"a fork was recorded earlier ({reason}); the mirror stays stopped", folder)

    def verify_checkpoint(self, data: bytes) -> Checkpoint:
        try:
            opened = cp_mod.open_signed(data, [self.vkey])
        except ScittOciError as exc:
            raise MirrorError(f"the source's checkpoint does not verify with {self.vkey.name}: {exc}") from None
        cp = opened.checkpoint
        if cp.origin != self.vkey.name:
            raise MirrorError(f"the checkpoint's origin {cp.origin!r} is not the key's name {self.vkey.name!r}")
        if self.policy is not None:
            try:
                cosigned = cp_mod.cosigned_by(opened.note, self.policy.witness_keys)
            except ScittOciError as exc:
                raise MirrorError(f"a witness cosignature on the checkpoint fails: {exc}") from None
            if not self.policy.satisfied(cosigned):
                names = ", ".join(w.name for w in cosigned) or "none"
                raise MirrorError(
                    f"checkpoint of size {cp.size} is below the witness quorum ({self.policy.describe()}; cosigned by {names})"
                )
        return cp

    def sync_once(self) -> int:
        """One pass; returns the size held afterwards. `ForkDetected` or `MirrorError` otherwise."""
        self.check_no_fork()
        data = self.client.checkpoint()
        cp = self.verify_checkpoint(data)
        held = self.store.held()
        if held is None:
            held = Held(0, merkle.EMPTY_ROOT, b"")
        if cp.size < held.size:
            tree = tiles.TiledTree(self.store.tile, held.size)
            ours = tree.hash_range(0, cp.size) if cp.size else merkle.EMPTY_ROOT
            proof = merkle.consistency_path(cp.size, held.size, tree.hash_range) if cp.size else []
            self._fork(
                f"the source's checkpoint has size {cp.size}, smaller than the {held.size} held",
                held,
                data,
                {
                    "held_size": held.size,
                    "new_size": cp.size,
                    "held_root_at_new_size": _b64(ours),
                    "proof_from_new_to_held": [_b64(h) for h in proof],
                },
            )
        if cp.size == held.size:
            if cp.root != held.root:
                self._fork(
                    f"the source signed another root for size {cp.size}",
                    held,
                    data,
                    {"size": cp.size, "held_root": _b64(held.root), "new_root": _b64(cp.root)},
                )
            return held.size
        source = _SourceTree(self.client, cp.size)
        if tiles.TiledTree(source.raw, cp.size).root() != cp.root:
            raise MirrorError(f"the source's tiles do not rebuild the root of its own checkpoint of size {cp.size}")
        tree = tiles.TiledTree(source.verified, cp.size)
        if held.size:
            prefix = tree.hash_range(0, held.size)
            if prefix != held.root:
                proof = merkle.consistency_path(held.size, cp.size, tree.hash_range)
                self._fork(
                    f"the source's tree of size {cp.size} does not extend the tree of size {held.size} held",
                    held,
                    data,
                    {
                        "held_size": held.size,
                        "held_root": _b64(held.root),
                        "new_size": cp.size,
                        "new_root": _b64(cp.root),
                        "new_tree_root_at_held_size": _b64(prefix),
                        "consistency_proof": [_b64(h) for h in proof],
                    },
                )
        start = self._staged_start(held, cp, data, tree)
        stop = min(cp.size, start + self.max_growth)
        meta = {"source": self.client.prefix, "vkey": self.vkey.vkey, "origin": self.vkey.name}
        self._stream(held, data, source, start, stop, meta)
        if stop < cp.size:
            log.info(
                "staged entries up to %d of the source's %d (at most %d per pass); the mirror still serves %d",
                stop,
                cp.size,
                self.max_growth,
                held.size,
            )
            return held.size
        upper: dict[tuple[int, int], bytes] = {}
        for level in range(1, tiles.levels(cp.size)):
            first = tiles.level_width(held.size, level) // tiles.WIDTH
            for ref in tiles.tiles_for(cp.size, level):
                if ref.index >= first:
                    upper[(level, ref.index)] = source.verified(level, ref.index)
        self.store.commit(cp, data, upper, [], meta)
        log.info("mirrored %d -> %d entries", held.size, cp.size)
        return cp.size

    def _staged_start(self, held: Held, cp: Checkpoint, data: bytes, tree: tiles.TiledTree) -> int:
        """Where this pass resumes: after the entries staged by earlier passes, when the new tree extends
        the checkpoint they were verified against (a fork otherwise)."""
        staged = self.store.staged_end(held.size)
        pending = self.store.meta("pending_note")
        if staged == held.size or pending is None:
            return held.size
        note_bytes = pending.encode()
        earlier = cp_mod.open_signed(note_bytes, [self.vkey]).checkpoint
        if earlier.size > cp.size or tree.hash_range(0, earlier.size) != earlier.root:
            theirs = tree.hash_range(0, min(earlier.size, cp.size))
            self._fork(
                f"the source's tree of size {cp.size} does not extend its checkpoint of size {earlier.size} "
                "against which the staged entries were verified",
                Held(earlier.size, earlier.root, note_bytes),
                data,
                {
                    "earlier_size": earlier.size,
                    "earlier_root": _b64(earlier.root),
                    "new_size": cp.size,
                    "new_root": _b64(cp.root),
                    "new_tree_root_at_min_size": _b64(theirs),
                },
            )
        start = min(staged, earlier.size)
        log.info(
            "resuming after %d staged entries (verified against the checkpoint of size %d)",
            start - held.size,
            earlier.size,
        )
        return start

    def _stream(
        self, held: Held, data: bytes, source: _SourceTree, start: int, stop: int, meta: dict[str, str]
    ) -> None:
        """Fetch, verify and stage the entries [start, stop) in bounded batches, each its own transaction."""
        level0: list[tuple[int, bytes]] = []
        batch: list[tuple[int, bytes]] = []
        size = 0
        level0_width = tiles.level_width(source.size, 0)
        for index in range(start // tiles.WIDTH, -(-stop // tiles.WIDTH)):
            ref = tiles.TileRef(0, index, min(tiles.WIDTH, level0_width - index * tiles.WIDTH))
            tile = source.verified(0, ref.index)
            level0.append((ref.index, tile))
            hashes = tiles.split_hashes(tile)
            bundle = self.client.bundle(ref.index, ref.width)
            for i, entry in enumerate(bundle):
                at = ref.index * tiles.WIDTH + i
                if at < start or at >= stop:
                    continue
                if merkle.leaf_hash(entry) != hashes[i]:
                    raise MirrorError(f"entry {at} from the source does not hash to its leaf in the tiles")
                batch.append((at, entry))
                size += len(entry)
            del bundle
            if size >= BATCH_BYTES or len(batch) >= BATCH_ENTRIES:
                self.store.commit_batch(held.size, data, level0, batch, meta)
                level0, batch, size = [], [], 0
        if level0 or batch:
            self.store.commit_batch(held.size, data, level0, batch, meta)

    def _fork(self, reason: str, held: Held, new_note: bytes, evidence: dict[str, object]) -> None:
        folder = self.store.record_fork(reason, held.note, new_note, evidence)
        self.on_fork()
        log.error("FORK: %s; evidence in %s", reason, folder)
        raise ForkDetected(reason, folder)

    def follow(self, interval: float, stop: threading.Event) -> None:
        """Pass after pass until `stop` is set; forks stop it (raised); other errors are logged and retried."""
        while not stop.is_set():
            try:
                self.sync_once()
            except MirrorError as exc:
                log.warning("mirror pass failed: %s", exc)
            except ForkDetected:
                raise
            except ScittOciError as exc:
                log.warning("mirror pass failed: %s", exc)
            stop.wait(interval)
