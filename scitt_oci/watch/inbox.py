"""The durable inbox: every registry event is stored before the webhook answers 2xx, processed at
least once, retried with backoff, and moved to a dead-letter state with its reason when it keeps
failing. The signed statement of an event is stored before it is registered, so a retry after a
crash registers and attaches the very same bytes (no duplicate log entries or referrers).
"""

from __future__ import annotations

import json
import random
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from scitt_oci import keyfiles
from scitt_oci.watch.events import DELETE, PUSH, RegistryEvent

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    registry TEXT NOT NULL,
    key TEXT NOT NULL,
    event TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL DEFAULT 0,
    last_error TEXT,
    statement BLOB,
    lease_until REAL NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    UNIQUE (registry, key)
);
CREATE INDEX IF NOT EXISTS events_due ON events (state, next_at);
CREATE TABLE IF NOT EXISTS deliveries (
    registry TEXT NOT NULL, delivery TEXT NOT NULL, content TEXT NOT NULL, event_id INTEGER NOT NULL,
    PRIMARY KEY (registry, delivery, content)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS transitions (
    registry TEXT NOT NULL, manifest TEXT NOT NULL, action TEXT NOT NULL, event_id INTEGER NOT NULL,
    PRIMARY KEY (registry, manifest, action)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS recorded (
    registry TEXT NOT NULL, repository TEXT NOT NULL, subject TEXT NOT NULL, kind TEXT NOT NULL,
    recorded TEXT NOT NULL, media_type TEXT, size INTEGER, referrer TEXT, created REAL NOT NULL,
    confirmed REAL,
    PRIMARY KEY (registry, repository, subject, kind, recorded)
) WITHOUT ROWID;
"""


@dataclass(frozen=True)
class InboxItem:
    id: int
    registry: str
    event: RegistryEvent
    attempts: int
    statement: bytes | None


@dataclass(frozen=True)
class Attachment:
    """A statement on record and the referrer manifest that attached it to `subject`."""

    repository: str
    subject: str
    kind: str
    recorded: str  # the manifest recorded (for a signature: the signature's own manifest)
    referrer: str


@dataclass(frozen=True)
class DeadLetter:
    id: int
    registry: str
    event: RegistryEvent
    attempts: int
    reason: str


class Inbox:
    def __init__(
        self,
        path: Path,
        *,
        max_attempts: int = 8,
        base_delay: float = 0.5,
        max_delay: float = 300.0,
        lease_seconds: float = 30.0,
    ) -> None:
        self.path = path
        self.lease_seconds = lease_seconds
        self.max_attempts = max_attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._local = threading.local()
        self.wakeup = threading.Event()
        keyfiles.private_database(path)
        with self._conn() as conn:
            conn.executescript(_SCHEMA)
            columns = {row[1] for row in conn.execute("PRAGMA table_info(recorded)")}
            if "confirmed" not in columns:  # a data directory from before attachments were reconciled
                conn.execute("ALTER TABLE recorded ADD COLUMN confirmed REAL")

    def _conn(self, durable: bool = False) -> sqlite3.Connection:
        """A per-thread connection. `durable` ones fsync every commit (events before the 2xx, statements
        before registration); progress marks (leases, done) may be lost to a power cut: that only means
        the event is processed again, which is idempotent."""
        name = "durable" if durable else "conn"
        conn: sqlite3.Connection | None = getattr(self._local, name, None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            setattr(self._local, name, conn)
        return conn

    def add(self, registry: str, events: list[RegistryEvent]) -> int:
        """Store events durably (one transaction); returns how many were new.

        A redelivery (the same delivery id and content) or the same news from another source (a
        platform manifest named by its index, polling) is stored once. A push of a manifest after its
        deletion (or a deletion after a new push) is a new event: its key names the last opposite event
        stored for that manifest."""
        now = time.time()
        conn = self._conn(durable=True)
        conn.execute("BEGIN IMMEDIATE")
        try:
            added = 0
            for e in events:
                content = e.key()
                if (
                    e.delivery
                    and conn.execute(
                        "SELECT 1 FROM deliveries WHERE registry = ? AND delivery = ? AND content = ?",
                        (registry, e.delivery, content),
                    ).fetchone()
                ):
                    continue  # a redelivery, even after what followed it
                key = content
                manifest = f"{e.repository}@{e.digest}" if e.digest and e.action in (PUSH, DELETE) else None
                if manifest is not None:
                    after = conn.execute(
                        "SELECT event_id FROM transitions WHERE registry = ? AND manifest = ? AND action = ?",
                        (registry, manifest, DELETE if e.action == PUSH else PUSH),
                    ).fetchone()
                    if after:
                        key += f"|after={after[0]}"
                cur = conn.execute(
                    "INSERT OR IGNORE INTO events (registry, key, event, created, updated) VALUES (?, ?, ?, ?, ?)",
                    (registry, key, json.dumps(e.to_json()), now, now),
                )
                if cur.rowcount != 1:
                    continue
                added += 1
                event_id = cur.lastrowid
                if e.delivery:
                    conn.execute(
                        "INSERT OR IGNORE INTO deliveries VALUES (?, ?, ?, ?)",
                        (registry, e.delivery, content, event_id),
                    )
                if manifest is not None:
                    conn.execute(
                        "INSERT OR REPLACE INTO transitions VALUES (?, ?, ?, ?)",
                        (registry, manifest, e.action, event_id),
                    )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        if added:
            self.wakeup.set()
        return added

    def claim(self, limit: int = 1) -> list[InboxItem]:
        """Lease due pending events. A lease keeps other workers and processes off an event; one whose
        worker died is taken again when its lease runs out (at-least-once)."""
        now = time.time()
        conn = self._conn()
        rows = conn.execute(
            "SELECT id, registry, event, attempts FROM events WHERE state = 'pending' AND next_at <= ? AND lease_until <= ? "
            "ORDER BY id LIMIT ?",
            (now, now, limit * 4),
        ).fetchall()
        out: list[InboxItem] = []
        for rid, registry, event, attempts in rows:
            if len(out) >= limit:
                break
            cur = conn.execute(
                "UPDATE events SET lease_until = ? WHERE id = ? AND state = 'pending' AND lease_until <= ?",
                (now + self.lease_seconds, rid, now),
            )
            if cur.rowcount != 1:
                continue  # another worker took it first
            statement = conn.execute("SELECT statement FROM events WHERE id = ?", (rid,)).fetchone()[0]
            out.append(
                InboxItem(
                    rid,
                    registry,
                    RegistryEvent.from_json(json.loads(event)),
                    attempts,
                    bytes(statement) if statement else None,
                )
            )
        return out

    def save_statement(self, item: InboxItem, statement: bytes) -> bytes:
        """Keep the first statement made for this event; returns the one stored."""
        conn = self._conn(durable=True)
        conn.execute(
            "UPDATE events SET statement = ?, updated = ? WHERE id = ? AND statement IS NULL",
            (statement, time.time(), item.id),
        )
        return bytes(conn.execute("SELECT statement FROM events WHERE id = ?", (item.id,)).fetchone()[0])

    def done(self, item: InboxItem, note: str | None = None) -> None:
        self._conn().execute(
            "UPDATE events SET state = 'done', last_error = ?, lease_until = 0, updated = ? WHERE id = ?",
            (note, time.time(), item.id),
        )

    def failed(self, item: InboxItem, reason: str, *, permanent: bool = False) -> bool:
        """Schedule a retry with jittered exponential backoff; dead-letter after max_attempts. True if dead."""
        attempts = item.attempts + 1
        dead = permanent or attempts >= self.max_attempts
        delay = min(self.max_delay, self.base_delay * 2 ** (attempts - 1)) * random.uniform(0.5, 1.0)  # noqa: S311
        self._conn().execute(
            "UPDATE events SET state = ?, attempts = ?, next_at = ?, last_error = ?, lease_until = 0, updated = ? WHERE id = ?",
            ("dead" if dead else "pending", attempts, time.time() + delay, reason[:2000], time.time(), item.id),
        )
        return dead

    def retry_dead(self) -> int:
        cur = self._conn().execute(
            "UPDATE events SET state = 'pending', attempts = 0, next_at = 0 WHERE state = 'dead'"
        )
        self.wakeup.set()
        return cur.rowcount

    def counts(self) -> dict[str, int]:
        rows = self._conn().execute("SELECT state, COUNT(*) FROM events GROUP BY state").fetchall()
        return {state: int(n) for state, n in rows}

    def dead(self, limit: int = 100) -> list[DeadLetter]:
        rows = (
            self._conn()
            .execute(
                "SELECT id, registry, event, attempts, last_error FROM events WHERE state = 'dead' ORDER BY id LIMIT ?",
                (limit,),
            )
            .fetchall()
        )
        return [DeadLetter(r[0], r[1], RegistryEvent.from_json(json.loads(r[2])), r[3], r[4] or "") for r in rows]

    # ----- what is on record -----
    def record(
        self,
        registry: str,
        repository: str,
        subject: str,
        kind: str,
        recorded: str,
        media_type: str | None,
        size: int | None,
        referrer: str | None,
    ) -> None:
        self._conn().execute(
            "INSERT OR REPLACE INTO recorded VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)",
            (registry, repository, subject, kind, recorded, media_type, size, referrer, time.time()),
        )

    def pushed(self, registry: str, repository: str, digest: str) -> tuple[str, int] | None:
        """Media type and size of a manifest recorded as pushed (for statements about it once it is gone)."""
        row = (
            self._conn()
            .execute(
                "SELECT media_type, size FROM recorded WHERE registry = ? AND repository = ? AND subject = ? AND kind = 'push' "
                "AND media_type IS NOT NULL",
                (registry, repository, digest),
            )
            .fetchone()
        )
        return (row[0], int(row[1])) if row else None

    def is_recorded(self, registry: str, repository: str, digest: str) -> bool:
        row = (
            self._conn()
            .execute(
                "SELECT 1 FROM recorded WHERE registry = ? AND repository = ? AND recorded = ?",
                (registry, repository, digest),
            )
            .fetchone()
        )
        return row is not None

    def attachments(self, registry: str, *, before: float, everything: bool = False) -> list[Attachment]:
        """What is on record with a referrer, recorded before `before`: only what no reconciliation has
        confirmed yet, or `everything`."""
        rows = (
            self._conn()
            .execute(
                "SELECT repository, subject, kind, recorded, referrer FROM recorded WHERE registry = ? "
                "AND referrer IS NOT NULL AND created < ? AND (? OR confirmed IS NULL)",
                (registry, before, everything),
            )
            .fetchall()
        )
        return [Attachment(*row) for row in rows]

    def confirm(self, registry: str, attachments: list[Attachment]) -> None:
        """Mark attachments as seen listed by the registry."""
        now = time.time()
        self._conn().executemany(
            "UPDATE recorded SET confirmed = ? WHERE registry = ? AND repository = ? AND subject = ? AND kind = ? "
            "AND recorded = ?",
            [(now, registry, a.repository, a.subject, a.kind, a.recorded) for a in attachments],
        )
