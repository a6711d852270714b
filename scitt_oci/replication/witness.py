"""A C2SP tlog-witness (c2sp.org/tlog-witness): `add-checkpoint` for the logs it is configured with.

It keeps the latest checkpoint it cosigned for each origin. Checking the request's old size against
that record and storing the new checkpoint happen in one SQLite write transaction (BEGIN IMMEDIATE,
which also serialises other processes), so concurrent requests can never roll the record back.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from scitt_oci import localdb
from scitt_oci.errors import ProofError, ScittOciError
from scitt_oci.scitt import merkle
from scitt_oci.tlog import checkpoint as cp_mod
from scitt_oci.tlog import note
from scitt_oci.tlog import witness as wire
from scitt_oci.tlog.note import Verifier

_SCHEMA = """
CREATE TABLE IF NOT EXISTS witnessed (origin TEXT PRIMARY KEY, size INTEGER NOT NULL, root BLOB NOT NULL,
                                      note BLOB NOT NULL, updated REAL NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS refused (id INTEGER PRIMARY KEY AUTOINCREMENT, origin TEXT NOT NULL, received REAL NOT NULL,
                                    reason TEXT NOT NULL, body BLOB NOT NULL);
"""
MAX_REFUSED = 10_000  # evidence of misbehaviour kept, at most


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    media_type: str = "text/plain; charset=utf-8"


def _text(status: int, message: str) -> Answer:
    return Answer(status, (message.rstrip("\n") + "\n").encode())


class Witness:
    def __init__(self, db: Path, cosigner: cp_mod.Cosigner, logs: dict[str, list[Verifier]]) -> None:
        self.cosigner = cosigner
        self.logs = logs  # origin -> the log's note keys
        self.path = db
        self._local = localdb.open_private(db)
        self._lock = threading.Lock()
        self._conn().executescript(_SCHEMA)

    def _conn(self) -> sqlite3.Connection:
        return localdb.connection(self._local, self.path)

    def vkey(self) -> str:
        return self.cosigner.verifier.vkey

    def latest(self, origin: str) -> tuple[int, bytes] | None:
        row = self._conn().execute("SELECT size, root FROM witnessed WHERE origin = ?", (origin,)).fetchone()
        return (int(row[0]), bytes(row[1])) if row else None

    def add_checkpoint(self, body: bytes, *, now: float | None = None) -> Answer:
        """The whole add-checkpoint exchange; the answer's status is the spec's."""
        try:
            req = wire.parse(body)
            signed = note.parse(req.checkpoint)
            cp = cp_mod.parse_text(signed.text)
        except ScittOciError as exc:
            return _text(400, f"malformed request: {exc}")
        keys = self.logs.get(cp.origin)
        if keys is None:
            return _text(404, f"unknown log origin {cp.origin[:200]!r}")
        try:
            note.verify(signed, keys)
        except ScittOciError as exc:
            return _text(403, f"the checkpoint is not signed by the log's key: {exc}")
        if req.old_size > cp.size:
            return _text(400, f"old size {req.old_size} is above the checkpoint size {cp.size}")
        if cp.size == 0 and cp.root != merkle.EMPTY_ROOT:
            return _text(422, "a checkpoint of size 0 must have the empty tree's root")
        with self._lock:
            conn = self._conn()
            conn.execute("BEGIN IMMEDIATE")
            try:
                answer = self._check_and_store(conn, req, cp, body)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        if answer is not None:
            return answer
        timestamp = int(now if now is not None else time.time())
        line = self.cosigner.cosign(signed.text, timestamp).line()
        return Answer(200, line.encode())

    def _check_and_store(
        self, conn: sqlite3.Connection, req: wire.AddCheckpoint, cp: cp_mod.Checkpoint, body: bytes
    ) -> Answer | None:
        row = conn.execute("SELECT size, root FROM witnessed WHERE origin = ?", (cp.origin,)).fetchone()
        size, root = (int(row[0]), bytes(row[1])) if row else (0, merkle.EMPTY_ROOT)
        if req.old_size != size:
            return Answer(409, wire.encode_size(size), wire.SIZE_MEDIA_TYPE)
        reason = None
        if req.old_size == 0:
            if req.proof:
                reason = "the old size is 0, so the consistency proof must be empty"
        elif req.old_size == cp.size:
            if req.proof:
                reason = "old and new sizes are equal, so the consistency proof must be empty"
            elif cp.root != root:
                reason = f"size {cp.size} was cosigned with another root"
        else:
            try:
                merkle.verify_consistency(req.old_size, cp.size, list(req.proof), root, cp.root)
            except ProofError as exc:
                reason = f"the consistency proof does not verify: {exc}"
        if reason is not None:
            count = conn.execute("SELECT COUNT(*) FROM refused").fetchone()[0]
            if count < MAX_REFUSED:  # a signed, inconsistent checkpoint may prove the log misbehaved
                conn.execute(
                    "INSERT INTO refused (origin, received, reason, body) VALUES (?, ?, ?, ?)",
                    (cp.origin, time.time(), reason, body),
                )
            return _text(422, reason)
        conn.execute(
            "INSERT INTO witnessed (origin, size, root, note, updated) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (origin) DO UPDATE SET size = excluded.size, root = excluded.root, "
            "note = excluded.note, updated = excluded.updated",
            (cp.origin, cp.size, cp.root, req.checkpoint, time.time()),
        )
        return None
