"""A verified copy of another service's C2SP tiled log (`scitt-oci mirror`).

One pass: fetch the source's checkpoint and verify its note signature (and a witness quorum when a
policy is given); fetch the hash tiles that changed since the checkpoint held and the new entry
bundles; rebuild the root from the tiles and check it is the signed root; check each new entry hashes
to its level-0 hash; check the tree held is a prefix of the new one (consistency); then store tiles,
entries and the checkpoint as received in one SQLite transaction. A SIGKILL anywhere leaves the last
committed checkpoint, from which the next pass resumes.

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
from scitt_oci.errors import ScittOciError
from scitt_oci.replication.fetch import TlogClient
from scitt_oci.scitt import merkle
from scitt_oci.tlog import checkpoint as cp_mod
from scitt_oci.tlog import tiles
from scitt_oci.tlog.checkpoint import Checkpoint
from scitt_oci.tlog.note import Verifier
from scitt_oci.tlog.policy import Policy

log = logging.getLogger("scitt_oci.mirror")

DB_NAME = "mirror.db"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS checkpoints (size INTEGER PRIMARY KEY, root BLOB NOT NULL, note BLOB NOT NULL,
                                        received REAL NOT NULL);
CREATE TABLE IF NOT EXISTS tiles (level INTEGER NOT NULL, idx INTEGER NOT NULL, hashes BLOB NOT NULL,
                                  PRIMARY KEY (level, idx)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS entries (idx INTEGER PRIMARY KEY, entry BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS forks (id INTEGER PRIMARY KEY AUTOINCREMENT, detected REAL NOT NULL, reason TEXT NOT NULL,
                                  held_note BLOB NOT NULL, new_note BLOB NOT NULL, evidence TEXT NOT NULL);
"""


class MirrorError(ScittOciError):
    """The source cannot be mirrored now (unreachable, bad signature, tiles that do not match its own
    checkpoint, below the witness quorum); nothing was stored."""


class ForkDetected(ScittOciError):
    """The source showed a history that does not extend the one held: evidence was kept."""

    def __init__(self, message: str, evidence_dir: Path) -> None:
        super().__init__(f"{message}; evidence in {evidence_dir}")
        self.evidence_dir = evidence_dir


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
        """Tiles, entries and the checkpoint in one transaction; the checkpoint must extend the one held.
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
                "INSERT OR IGNORE INTO checkpoints (size, root, note, received) VALUES (?, ?, ?, ?)",
                (cp.size, cp.root, note, time.time()),
            )
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
    ) -> None:
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

    def _fetch_tiles(self, size: int, since: int) -> dict[tuple[int, int], bytes]:
        """The source's tiles of the tree of `size` that differ from those of the tree of `since`."""
        out: dict[tuple[int, int], bytes] = {}
        for level in range(tiles.levels(size)):
            first = tiles.level_width(since, level) // tiles.WIDTH
            for ref in tiles.tiles_for(size, level):
                if ref.index >= first:
                    out[(level, ref.index)] = self.client.tile(level, ref.index, ref.width)
        return out

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
        new_tiles = self._fetch_tiles(cp.size, held.size)
        tree = tiles.TiledTree(lambda lv, ix: new_tiles.get((lv, ix)) or self.store.tile(lv, ix), cp.size)
        if tree.root() != cp.root:
            # Our older tiles under the source's new ones: read the source's whole tree to tell a fork
            # (its own tiles rebuild its root, but not over our history) from a broken source.
            everything = self._fetch_tiles(cp.size, 0)
            theirs = tiles.TiledTree(lambda lv, ix: everything[(lv, ix)], cp.size)
            if theirs.root() != cp.root:
                raise MirrorError(f"the source's tiles do not rebuild the root of its own checkpoint of size {cp.size}")
            tree = theirs
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
        entries: list[tuple[int, bytes]] = []
        for ref in tiles.tiles_for(cp.size, 0):
            if (ref.index + 1) * tiles.WIDTH <= held.size:
                continue
            bundle = self.client.bundle(ref.index, ref.width)
            level0 = tiles.split_hashes(new_tiles[(0, ref.index)])
            for i, entry in enumerate(bundle):
                index = ref.index * tiles.WIDTH + i
                if index < held.size:
                    continue
                if merkle.leaf_hash(entry) != level0[i]:
                    raise MirrorError(f"entry {index} from the source does not hash to its leaf in the tiles")
                entries.append((index, entry))
        meta = {"source": self.client.prefix, "vkey": self.vkey.vkey, "origin": self.vkey.name}
        self.store.commit(cp, data, new_tiles, entries, meta)
        log.info("mirrored %d -> %d entries", held.size, cp.size)
        return cp.size

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
