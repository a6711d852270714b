"""Collecting witness cosignatures for the service's own checkpoints (the log side of tlog-witness).

A background thread sends each new checkpoint to every configured witness with a consistency proof
from the size that witness last cosigned; a 409 names the size the witness holds, and the request is
retried from there at once. Verified cosignature lines are stored per size; the checkpoint published
at /tlog/checkpoint is then the newest one that `quorum` witnesses cosigned. Nothing here runs on the
registration path.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from dataclasses import dataclass, field
from pathlib import Path

from scitt_oci.errors import PolicyError, ScittOciError
from scitt_oci.log.tiled import TiledLog
from scitt_oci.replication.fetch import TlogClient
from scitt_oci.scitt import merkle
from scitt_oci.tlog import checkpoint as cp_mod
from scitt_oci.tlog import note
from scitt_oci.tlog import witness as wire
from scitt_oci.tlog.note import Signature, Verifier

log = logging.getLogger("scitt_oci.witnesses")
# A witness that failed is tried again after a doubling wait, at most this long: witnesses are cheap to
# ask, and a peer that was down (or still starting) should see the log's checkpoints soon after it is up.
MAX_BACKOFF = 15.0
PATH = "/tlog/witness/add-checkpoint"
MAX_CONFLICTS = 3  # 409 answers followed in a row before waiting for the next round


@dataclass
class Peer:
    url: str
    key: Verifier
    client: TlogClient
    known_size: int = 0  # what we believe the witness last cosigned for our log
    failures: int = 0
    next_try: float = 0.0
    last_error: str | None = field(default=None)


class CosignatureStore:
    def __init__(self, path: Path) -> None:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            path.touch(mode=0o600)
        self.path = path
        self._local = threading.local()
        self._conn().execute(
            "CREATE TABLE IF NOT EXISTS cosignatures (size INTEGER NOT NULL, witness TEXT NOT NULL, line TEXT NOT NULL,"
            " PRIMARY KEY (size, witness)) WITHOUT ROWID"
        )

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            self._local.conn = conn
        return conn

    def add(self, size: int, witness: str, line: str) -> None:
        self._conn().execute(
            "INSERT OR REPLACE INTO cosignatures (size, witness, line) VALUES (?, ?, ?)", (size, witness, line)
        )

    def lines(self, size: int) -> list[tuple[str, str]]:
        rows = self._conn().execute("SELECT witness, line FROM cosignatures WHERE size = ?", (size,)).fetchall()
        return [(str(w), str(line)) for w, line in rows]

    def newest_with(self, quorum: int, witnesses: set[str], at_most: int) -> int | None:
        marks = ",".join("?" * len(witnesses))
        row = (
            self._conn()
            .execute(
                "SELECT size FROM cosignatures WHERE size <= ? AND witness IN (" + marks + ") "  # noqa: S608 - placeholders
                "GROUP BY size HAVING COUNT(DISTINCT witness) >= ? ORDER BY size DESC LIMIT 1",
                (at_most, *sorted(witnesses), quorum),
            )
            .fetchone()
        )
        return int(row[0]) if row else None


class WitnessClient:
    def __init__(
        self,
        tiled: TiledLog,
        peers: list[tuple[str, Verifier]],
        quorum: int,
        store: CosignatureStore,
        *,
        interval: float = 0.5,
        timeout: float = 10.0,
    ) -> None:
        self.tiled = tiled
        self.quorum = quorum
        self.store = store
        self.interval = interval
        self.peers = [Peer(url, key, TlogClient(url, timeout=timeout)) for url, key in peers]
        self._names = {p.key.vkey for p in self.peers}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ----- what /tlog/checkpoint publishes -----
    def publish_size(self, latest: int) -> int:
        if self.quorum <= 0:
            return latest
        found = self.store.newest_with(self.quorum, self._names, latest)
        return found if found is not None else latest  # none yet: the log's own checkpoint, unwitnessed

    def cosignatures(self, size: int, text: bytes) -> list[Signature]:
        out: list[Signature] = []
        for witness, line in self.store.lines(size):
            if witness in self._names:
                out.append(Signature.parse(line))
        return out

    # ----- sending -----
    def push(self, peer: Peer, size: int) -> bool:
        """Send our checkpoint of `size` to one witness; True when it cosigned (following 409s)."""
        data = self.tiled.signed_checkpoint(size)
        cp = self.tiled.checkpoint_at(size)
        if data is None or cp is None:
            return False
        for _ in range(MAX_CONFLICTS + 1):
            old = peer.known_size
            if old > size:
                peer.last_error = f"the witness holds size {old}, above our {size}"
                return False
            proof = merkle.consistency_path(old, size, self.tiled.store.tree().hash_range) if 0 < old < size else []
            status, _media, body = peer.client.post(PATH, wire.encode(old, proof, data))
            if status == 409:
                try:
                    peer.known_size = wire.parse_size(body)
                except ScittOciError as exc:
                    peer.last_error = f"409 with a malformed size: {exc}"
                    return False
                log.info("witness %s holds size %d; retrying from there", peer.key.name, peer.known_size)
                continue
            if status != 200:
                peer.last_error = f"HTTP {status}: {body[:200].decode('utf-8', errors='replace').strip()}"
                return False
            return self._accept(peer, size, cp, body)
        peer.last_error = "too many conflicting sizes in a row"
        return False

    def _accept(self, peer: Peer, size: int, cp: cp_mod.Checkpoint, body: bytes) -> bool:
        text = cp.text()
        try:
            lines = body.decode("utf-8").split("\n")
        except UnicodeDecodeError:
            peer.last_error = "the cosignature lines are not UTF-8"
            return False
        for raw in lines:
            if not raw:
                continue
            try:
                sig = Signature.parse(raw)
            except ScittOciError:
                continue
            if not peer.key.matches(sig):
                continue  # another key of that witness: ignored, as the spec asks
            try:
                cp_mod.verify_cosignature(peer.key, text, sig)
            except ScittOciError as exc:
                peer.last_error = f"its cosignature does not verify: {exc}"
                return False
            self.store.add(size, peer.key.vkey, sig.line().rstrip("\n"))
            peer.known_size = size
            peer.failures, peer.last_error = 0, None
            return True
        peer.last_error = "no cosignature by its configured key in the answer"
        return False

    def round(self, now: float) -> None:
        latest = self.tiled.store.size()
        if latest == 0:
            return
        for peer in self.peers:
            if peer.known_size == latest and peer.last_error is None:
                continue
            if now < peer.next_try:
                continue
            try:
                ok = self.push(peer, latest)
            except ScittOciError as exc:
                ok, peer.last_error = False, str(exc)
            if not ok:
                peer.failures += 1
                peer.next_try = now + min(MAX_BACKOFF, self.interval * 2**peer.failures)
                log.warning("witness %s did not cosign size %d: %s", peer.key.name, latest, peer.last_error)

    def _run(self) -> None:
        import time

        while not self._stop.is_set():
            try:
                self.round(time.monotonic())
            except Exception:  # the thread must outlive any one failure
                log.exception("witness round failed")
            self._stop.wait(self.interval)

    def start(self) -> None:
        if self._thread is None and self.peers:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="witness-client", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None


def parse_peer_key(text: str) -> Verifier:
    key = note.parse_vkey(text)
    if key.sig_type != note.COSIGNATURE_V1:
        raise PolicyError(f"witness key {key.name} is not a cosignature/v1 key (type 0x04)")
    return key
