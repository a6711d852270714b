"""The durable inbox: every registry event is stored before the webhook answers 2xx, processed at
least once, retried with backoff, and moved to a dead-letter state with its reason when it keeps
failing. The signed statement of an event is stored before it is registered, so a retry after a
crash registers and attaches the very same bytes (no duplicate log entries or referrers).

Two backends share everything but the dialect: SQLite (`Inbox`, the embedded default, one pod) and
PostgreSQL (`PostgresInbox`, any number of replicas on one database): there events are leased with
`FOR UPDATE SKIP LOCKED`, a lease names its holder and runs out when a replica dies, and the catalog
walks (reconciliation, `backfill`) take a session advisory lock so one replica walks at a time.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import random
import re
import secrets
import socket
import sqlite3
import threading
import time
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scitt_oci import keyfiles, pgdriver
from scitt_oci.errors import InboxError, InboxUnavailable
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
    lease_owner TEXT,
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


_HOLDER = socket.gethostname()[:64]  # a Pod's name
# SQLite's primary result codes for a database that cannot be used now: BUSY, LOCKED, IOERR, FULL, CANTOPEN.
_SQLITE_AWAY = frozenset({5, 6, 10, 13, 14})
STATES = ("pending", "done", "dead")  # an event's states, in order


@dataclass(frozen=True)
class InboxItem:
    id: int
    registry: str
    event: RegistryEvent
    attempts: int
    statement: bytes | None
    lease: str | None = None  # the holder's token: done/failed count only while it holds the lease


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
    """The inbox on SQLite (the embedded default). `PostgresInbox` changes only the dialect."""

    idle_wait = 0.05  # how long an idle worker waits for news before it looks again
    _backend = "sqlite"

    def __init__(
        self,
        path: Path,
        *,
        max_attempts: int = 8,
        base_delay: float = 0.5,
        max_delay: float = 300.0,
        lease_seconds: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = path
        self._settings(max_attempts, base_delay, max_delay, lease_seconds, clock)
        keyfiles.private_database(path)
        conn = self._conn()
        conn.executescript(_SCHEMA)
        for table, column, kind in (("recorded", "confirmed", "REAL"), ("events", "lease_owner", "TEXT")):
            columns = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
            if column not in columns:  # a data directory from an older version
                conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")

    def _settings(
        self, max_attempts: int, base_delay: float, max_delay: float, lease_seconds: float, clock: Callable[[], float]
    ) -> None:
        self.lease_seconds = lease_seconds
        self.clock = clock  # the time of leases and retries (tests move it on instead of waiting)
        self.max_attempts = max_attempts
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._local = threading.local()
        self.wakeup = threading.Event()

    # ----- dialect -----
    def _conn(self, durable: bool = False) -> Any:
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

    def _x(self, conn: Any, sql: str, params: Sequence[Any] = ()) -> Any:
        return conn.execute(sql, params)

    def _begin(self, conn: Any) -> None:
        conn.execute("BEGIN IMMEDIATE")

    def _transaction_retry(self, exc: BaseException) -> bool:
        """Whether a failed transaction may simply be run again (PostgreSQL deadlocks between replicas)."""
        return False

    def _unavailable(self, exc: BaseException) -> InboxUnavailable | None:
        """`exc` as the database being out of reach (the event at hand not at fault), or None. On SQLite:
        the write lock held past the timeout by another process, the disk full or failing."""
        if isinstance(exc, sqlite3.OperationalError) and exc.sqlite_errorcode & 0xFF in _SQLITE_AWAY:
            return InboxUnavailable(f"the inbox {self.path} cannot be written ({exc})")
        return None  # a statement at fault (no such table, a syntax error) is a bug: raised as it is

    def _lease(self, conn: Any, now: float, limit: int, owner: str) -> list[tuple[Any, ...]]:
        """Lease up to `limit` due events for `owner`: rows of (id, registry, event, attempts, statement)."""
        rows = self._x(
            conn,
            "SELECT id FROM events WHERE state = 'pending' AND next_at <= ? AND lease_until <= ? ORDER BY id LIMIT ?",
            (now, now, limit * 4),
        ).fetchall()
        out: list[tuple[Any, ...]] = []
        for (rid,) in rows:
            if len(out) >= limit:
                break
            row = self._x(
                conn,
                "UPDATE events SET lease_until = ?, lease_owner = ? WHERE id = ? AND state = 'pending' "
                "AND lease_until <= ? RETURNING id, registry, event, attempts, statement",
                (now + self.lease_seconds, owner, rid, now),
            ).fetchone()
            if row is not None:  # None: another worker took it first
                out.append(row)
        return out

    @contextlib.contextmanager
    def exclusive(self, name: str, *, wait: bool = False) -> Iterator[bool]:
        """Hold the right to walk registry `name`'s catalog (reconciliation, backfill); yields False when
        another walker holds it and `wait` is not set. On SQLite: a lock file beside the database
        (`serve` and a `backfill` share it), released by the system when its holder dies."""
        lock_path = self.path.with_name(f"{self.path.name}.walk-{zlib.crc32(name.encode()):08x}")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
                got = True
            except BlockingIOError:
                got = False
            yield got
        finally:
            os.close(fd)  # releases the lock

    # ----- events -----
    def add(self, registry: str, events: list[RegistryEvent], *, revive: bool = False) -> int:
        """Store events durably (one transaction); returns how many were new.

        A redelivery (the same delivery id and content) or the same news from another source (a
        platform manifest named by its index, polling) is stored once. A push of a manifest after its
        deletion (or a deletion after a new push) is a new event: its key names the last opposite event
        stored for that manifest. With `revive`, an event stored before and dead-lettered is queued
        again with its attempts reset (counted as new): `backfill` means to record all it finds."""
        for attempt in range(5):
            try:
                added = self._add(registry, events, revive)
                break
            except Exception as exc:
                if attempt < 4 and self._transaction_retry(exc):
                    continue
                unavailable = self._unavailable(exc)
                if unavailable is None:
                    raise
                raise unavailable from None
        if added:
            self.wakeup.set()
        return added

    def _add(self, registry: str, events: list[RegistryEvent], revive: bool = False) -> int:
        now = self.clock()
        conn = self._conn(durable=True)
        self._begin(conn)
        try:
            added = 0
            for e in events:
                content = e.key()
                if (
                    e.delivery
                    and self._x(
                        conn,
                        "SELECT 1 FROM deliveries WHERE registry = ? AND delivery = ? AND content = ?",
                        (registry, e.delivery, content),
                    ).fetchone()
                ):
                    continue  # a redelivery, even after what followed it
                key = content
                manifest = f"{e.repository}@{e.digest}" if e.digest and e.action in (PUSH, DELETE) else None
                if manifest is not None:
                    after = self._x(
                        conn,
                        "SELECT event_id FROM transitions WHERE registry = ? AND manifest = ? AND action = ?",
                        (registry, manifest, DELETE if e.action == PUSH else PUSH),
                    ).fetchone()
                    if after:
                        key += f"|after={after[0]}"
                row = self._x(
                    conn,
                    "INSERT INTO events (registry, key, event, created, updated) VALUES (?, ?, ?, ?, ?) "
                    "ON CONFLICT (registry, key) DO NOTHING RETURNING id",
                    (registry, key, json.dumps(e.to_json()), now, now),
                ).fetchone()
                if row is None:
                    if revive and self._revive(conn, registry, key, now):
                        added += 1
                    continue
                added += 1
                event_id = row[0]
                if e.delivery:
                    self._x(
                        conn,
                        "INSERT INTO deliveries VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
                        (registry, e.delivery, content, event_id),
                    )
                if manifest is not None:
                    self._x(
                        conn,
                        "INSERT INTO transitions VALUES (?, ?, ?, ?) ON CONFLICT (registry, manifest, action) "
                        "DO UPDATE SET event_id = excluded.event_id",
                        (registry, manifest, e.action, event_id),
                    )
            self._x(conn, "COMMIT")
        except BaseException:
            self._x(conn, "ROLLBACK")
            raise
        return added

    def not_a_deletion(self, item: InboxItem) -> None:
        """`item`, a deletion, turned out not to delete its manifest (which still exists: a blob's or a
        tag's deletion). It does not count as the manifest's deletion: a push after it is no news (a
        redelivery without its id, polling) and keeps the key it had before; and a real deletion later
        is news, not a repeat of this one (whose key it would have)."""
        e = item.event
        conn = self._conn()
        self._x(
            conn,
            "DELETE FROM transitions WHERE registry = ? AND manifest = ? AND action = ? AND event_id = ?",
            (item.registry, f"{e.repository}@{e.digest}", DELETE, item.id),
        )
        void = f"|void={item.id}"
        self._x(conn, "UPDATE events SET key = key || ? WHERE id = ? AND key NOT LIKE ?", (void, item.id, f"%{void}"))

    def _revive(self, conn: Any, registry: str, key: str, now: float) -> bool:
        row = self._x(
            conn,
            "UPDATE events SET state = 'pending', attempts = 0, next_at = 0, updated = ? "
            "WHERE registry = ? AND key = ? AND state = 'dead' RETURNING id",
            (now, registry, key),
        ).fetchone()
        return row is not None

    def claim(self, limit: int = 1) -> list[InboxItem]:
        """Lease due pending events. A lease keeps other workers, processes and replicas off an event;
        one whose worker died is taken again when its lease runs out (at-least-once)."""
        owner = f"{_HOLDER}/{os.getpid()}/{secrets.token_hex(6)}"  # who holds it, for operators; unique per lease
        rows = self._lease(self._conn(), self.clock(), limit, owner)
        return [
            InboxItem(
                int(rid),
                registry,
                RegistryEvent.from_json(json.loads(event)),
                int(attempts),
                bytes(statement) if statement else None,
                owner,
            )
            for rid, registry, event, attempts, statement in rows
        ]

    def save_statement(self, item: InboxItem, statement: bytes) -> bytes:
        """Keep the first statement made for this event; returns the one stored."""
        conn = self._conn(durable=True)
        self._x(
            conn,
            "UPDATE events SET statement = ?, updated = ? WHERE id = ? AND statement IS NULL",
            (statement, self.clock(), item.id),
        )
        return bytes(self._x(conn, "SELECT statement FROM events WHERE id = ?", (item.id,)).fetchone()[0])

    def done(self, item: InboxItem, note: str | None = None) -> bool:
        """Mark the event done; False if its lease ran out and another worker holds it now (that worker
        finishes it: every step is idempotent, so the event still completes once)."""
        cur = self._x(
            self._conn(),
            "UPDATE events SET state = 'done', last_error = ?, lease_until = 0, lease_owner = NULL, updated = ? "
            "WHERE id = ? AND state = 'pending' AND lease_owner = ?",
            (note, self.clock(), item.id, item.lease),
        )
        return bool(cur.rowcount == 1)

    def renew(self, item: InboxItem) -> bool:
        """Extend the lease on an event being processed to `lease_seconds` from now; False if it was lost
        (it ran out and another worker holds it now, or the event is no longer pending): the same rule
        as `done` and `failed`, by the holder's token."""
        cur = self._x(
            self._conn(),
            "UPDATE events SET lease_until = ? WHERE id = ? AND state = 'pending' AND lease_owner = ?",
            (self.clock() + self.lease_seconds, item.id, item.lease),
        )
        return bool(cur.rowcount == 1)

    def failed(self, item: InboxItem, reason: str, *, permanent: bool = False, outage: bool = False) -> bool:
        """Schedule a retry with jittered exponential backoff; dead-letter after max_attempts. True if dead.
        An `outage` (our own database out of reach) backs off the same way but never dead-letters: the
        event is not at fault, and it goes through once the database is back."""
        attempts = item.attempts + 1
        dead = permanent or (attempts >= self.max_attempts and not outage)
        now = self.clock()
        # The exponent is capped: an outage is retried without end, and 2.0 ** 1100 is past a float.
        delay = min(self.max_delay, self.base_delay * 2.0 ** min(attempts - 1, 40)) * random.uniform(0.5, 1.0)  # noqa: S311
        self._x(
            self._conn(),
            "UPDATE events SET state = ?, attempts = ?, next_at = ?, last_error = ?, lease_until = 0, "
            "lease_owner = NULL, updated = ? WHERE id = ? AND state = 'pending' AND lease_owner = ?",
            (
                "dead" if dead else "pending",
                attempts,
                now + delay,
                reason[:2000],
                now,
                item.id,
                item.lease,
            ),
        )
        return dead

    def retry_dead(self) -> int:
        cur = self._x(
            self._conn(), "UPDATE events SET state = 'pending', attempts = 0, next_at = 0 WHERE state = 'dead'"
        )
        self.wakeup.set()
        return int(cur.rowcount)

    def counts(self) -> dict[str, int]:
        rows = self._x(self._conn(), "SELECT state, COUNT(*) FROM events GROUP BY state").fetchall()
        return {state: int(n) for state, n in rows}

    def dead(self, limit: int = 100) -> list[DeadLetter]:
        rows = self._x(
            self._conn(),
            "SELECT id, registry, event, attempts, last_error FROM events WHERE state = 'dead' ORDER BY id LIMIT ?",
            (limit,),
        ).fetchall()
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
        self._x(
            self._conn(),
            "INSERT INTO recorded VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL) "
            "ON CONFLICT (registry, repository, subject, kind, recorded) DO UPDATE SET media_type = excluded.media_type, "
            "size = excluded.size, referrer = excluded.referrer, created = excluded.created, confirmed = NULL",
            (registry, repository, subject, kind, recorded, media_type, size, referrer, time.time()),
        )

    def push_on_record(self, registry: str, repository: str, digest: str) -> bool:
        """Whether the manifest's latest record in `repository` is its push (no deletion recorded since)."""
        rows = self._x(
            self._conn(),
            "SELECT kind, created FROM recorded WHERE registry = ? AND repository = ? AND subject = ? "
            "AND recorded = ? AND kind IN ('push', 'delete')",
            (registry, repository, digest, digest),
        ).fetchall()
        return bool(rows) and max(rows, key=lambda r: float(r[1]))[0] == "push"

    def pushed(self, registry: str, repository: str, digest: str) -> tuple[str, int] | None:
        """Media type and size of a manifest recorded as pushed (for statements about it once it is gone)."""
        row = self._x(
            self._conn(),
            "SELECT media_type, size FROM recorded WHERE registry = ? AND repository = ? AND subject = ? AND kind = 'push' "
            "AND media_type IS NOT NULL",
            (registry, repository, digest),
        ).fetchone()
        return (row[0], int(row[1])) if row else None

    def is_recorded(self, registry: str, repository: str, digest: str) -> bool:
        row = self._x(
            self._conn(),
            "SELECT 1 FROM recorded WHERE registry = ? AND repository = ? AND recorded = ?",
            (registry, repository, digest),
        ).fetchone()
        return row is not None

    def attachments(self, registry: str, *, before: float, everything: bool = False) -> list[Attachment]:
        """What is on record with a referrer, recorded before `before`: only what no reconciliation has
        confirmed yet, or `everything`."""
        rows = self._x(
            self._conn(),
            "SELECT repository, subject, kind, recorded, referrer FROM recorded WHERE registry = ? "
            "AND referrer IS NOT NULL AND created < ? AND (? OR confirmed IS NULL)",
            (registry, before, everything),
        ).fetchall()
        return [Attachment(*row) for row in rows]

    def confirm(self, registry: str, attachments: list[Attachment]) -> None:
        """Mark attachments as seen listed by the registry."""
        now = time.time()
        conn = self._conn()
        for a in attachments:
            self._x(
                conn,
                "UPDATE recorded SET confirmed = ? WHERE registry = ? AND repository = ? AND subject = ? AND kind = ? "
                "AND recorded = ?",
                (now, registry, a.repository, a.subject, a.kind, a.recorded),
            )

    def close(self) -> None:
        for name in ("conn", "durable"):
            conn = getattr(self._local, name, None)
            if conn is not None:
                conn.close()
                setattr(self._local, name, None)


_PG_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_PG_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id BIGSERIAL PRIMARY KEY, registry TEXT NOT NULL, key TEXT NOT NULL, event TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending', attempts INTEGER NOT NULL DEFAULT 0,
    next_at DOUBLE PRECISION NOT NULL DEFAULT 0, last_error TEXT, statement BYTEA,
    lease_until DOUBLE PRECISION NOT NULL DEFAULT 0, lease_owner TEXT,
    created DOUBLE PRECISION NOT NULL, updated DOUBLE PRECISION NOT NULL, UNIQUE (registry, key)
);
CREATE INDEX IF NOT EXISTS events_due ON events (state, next_at);
CREATE TABLE IF NOT EXISTS deliveries (
    registry TEXT NOT NULL, delivery TEXT NOT NULL, content TEXT NOT NULL, event_id BIGINT NOT NULL,
    PRIMARY KEY (registry, delivery, content)
);
CREATE TABLE IF NOT EXISTS transitions (
    registry TEXT NOT NULL, manifest TEXT NOT NULL, action TEXT NOT NULL, event_id BIGINT NOT NULL,
    PRIMARY KEY (registry, manifest, action)
);
CREATE TABLE IF NOT EXISTS recorded (
    registry TEXT NOT NULL, repository TEXT NOT NULL, subject TEXT NOT NULL, kind TEXT NOT NULL,
    recorded TEXT NOT NULL, media_type TEXT, size BIGINT, referrer TEXT, created DOUBLE PRECISION NOT NULL,
    confirmed DOUBLE PRECISION,
    PRIMARY KEY (registry, repository, subject, kind, recorded)
);
CREATE INDEX IF NOT EXISTS recorded_by_manifest ON recorded (registry, repository, recorded)
"""
_PG_SCHEMA_LOCK = 0x5C177_1B0  # pg_advisory_xact_lock key held while the tables are made
_PG_WALK_LOCK = 0x5C177_1B1  # the high half of a catalog walk's session advisory lock


class PostgresInbox(Inbox):
    """The inbox and the "on record" table on PostgreSQL, shared by every replica of the service.

    Leases carry their holder's token and an expiry: a replica that dies (SIGKILL, node loss) leaves
    leases that run out after `lease_seconds`, and any replica takes the events up again. Claims use
    `FOR UPDATE SKIP LOCKED`, so replicas never wait on each other's rows. Lease times are the
    replicas' own clocks: keep them in sync (NTP) to well under `lease_seconds`."""

    idle_wait = 0.2  # news from other replicas arrives by polling: a little slower, for the database's sake
    _backend = "postgres"

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = "scitt_oci",
        max_attempts: int = 8,
        base_delay: float = 0.5,
        max_delay: float = 300.0,
        lease_seconds: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not _PG_SCHEMA_NAME.match(schema):
            raise InboxError(f"PostgreSQL schema name {schema!r} must be a lower-case identifier")
        psycopg = pgdriver.load()  # only deployments that use PostgreSQL need it (an extra)

        self._psycopg = psycopg
        self._dsn = dsn
        self._schema = schema
        self.path = Path(f"postgresql:{schema}")
        self._settings(max_attempts, base_delay, max_delay, lease_seconds, clock)
        try:
            conn = self._connect(create=True)
            conn.execute("BEGIN")
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_PG_SCHEMA_LOCK,))
            foreign = pgdriver.foreign_tables(conn, schema)
            if foreign:
                conn.close()  # nothing made: the transaction ends with the session
                raise InboxError(pgdriver.refusal(schema, foreign))
            for statement in filter(str.strip, _PG_SCHEMA.split(";")):
                conn.execute(statement)
            conn.execute("COMMIT")
            conn.close()
        except psycopg.Error as exc:
            # The DSN may hold a password: name the error, not the DSN.
            raise InboxError(f"cannot open the PostgreSQL inbox ({pgdriver.summary(exc)})") from None

    def _connect(self, *, create: bool = False) -> Any:
        conn = pgdriver.connect(self._psycopg, self._dsn)
        if create:
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {self._schema}")
        conn.execute(f"SET search_path TO {self._schema}")
        return conn

    def _conn(self, durable: bool = False) -> Any:
        # Every PostgreSQL commit is durable (synchronous_commit is the server's); one connection a thread.
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            try:
                conn = self._connect()
            except self._psycopg.OperationalError as exc:
                raise self._out_of_reach(exc) from None
            self._local.conn = conn
        return conn

    def _x(self, conn: Any, sql: str, params: Sequence[Any] = ()) -> Any:
        """One statement; outside a transaction, a connection lost (a database restart, a failover, a
        proxy's idle timeout) is made again and the statement run once more; a database still out of
        reach is `InboxUnavailable`. In a transaction the error is raised as it is: `add` runs the
        whole transaction again."""
        try:
            return conn.execute(sql.replace("?", "%s"), params)
        except self._psycopg.OperationalError as exc:
            if getattr(self._local, "tx", False):
                raise
            if not conn.closed:
                raise self._out_of_reach(exc) from None
        try:
            return self._conn().execute(sql.replace("?", "%s"), params)
        except self._psycopg.OperationalError as exc:
            raise self._out_of_reach(exc) from None

    def _unavailable(self, exc: BaseException) -> InboxUnavailable | None:
        if isinstance(exc, InboxUnavailable):
            return exc
        return self._out_of_reach(exc) if isinstance(exc, self._psycopg.OperationalError) else None

    def _out_of_reach(self, exc: BaseException) -> InboxUnavailable:
        return InboxUnavailable(f"the PostgreSQL inbox is out of reach ({pgdriver.summary(exc)})")

    def _begin(self, conn: Any) -> None:
        self._local.tx = True
        try:
            conn.execute("BEGIN")
        except BaseException:
            self._local.tx = False
            raise

    def _add(self, registry: str, events: list[RegistryEvent], revive: bool = False) -> int:
        try:
            return super()._add(registry, events, revive)
        finally:
            self._local.tx = False

    def _transaction_retry(self, exc: BaseException) -> bool:
        errors = self._psycopg.errors
        if isinstance(exc, self._psycopg.OperationalError) and self._conn_lost():
            return True  # run the whole transaction again on a new connection
        return isinstance(exc, (errors.DeadlockDetected, errors.SerializationFailure, errors.UniqueViolation))

    def _conn_lost(self) -> bool:
        conn = getattr(self._local, "conn", None)
        return conn is None or bool(conn.closed)

    def _lease(self, conn: Any, now: float, limit: int, owner: str) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = self._x(
            conn,
            "UPDATE events SET lease_until = %s, lease_owner = %s WHERE id IN ("
            "SELECT id FROM events WHERE state = 'pending' AND next_at <= %s AND lease_until <= %s "
            "ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING id, registry, event, attempts, statement",
            (now + self.lease_seconds, owner, now, now, limit),
        ).fetchall()
        return sorted(rows, key=lambda r: int(r[0]))

    @contextlib.contextmanager
    def exclusive(self, name: str, *, wait: bool = False) -> Iterator[bool]:
        """A session advisory lock on its own connection: held by one replica at a time, and released
        by the server when that replica's connection goes (a replica that dies mid-walk frees it)."""
        try:
            conn = self._connect()
        except self._psycopg.OperationalError as exc:
            raise self._out_of_reach(exc) from None
        got = False
        try:
            key = (_PG_WALK_LOCK, zlib.crc32(name.encode()) - 2**31)
            try:
                if wait:
                    conn.execute("SELECT pg_advisory_lock(%s, %s)", key)
                    got = True
                else:
                    got = bool(conn.execute("SELECT pg_try_advisory_lock(%s, %s)", key).fetchone()[0])
            except self._psycopg.OperationalError as exc:
                raise self._out_of_reach(exc) from None
            yield got
        finally:
            # Unlocked before the session ends: the server drops a closed session's locks a moment after
            # the client has gone, and the next walker would find the walk still taken.
            if got and not conn.closed:
                with contextlib.suppress(self._psycopg.Error):
                    conn.execute("SELECT pg_advisory_unlock(%s, %s)", key)
            conn.close()  # ends the session, and with it the lock (if the unlock did not get through)

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
