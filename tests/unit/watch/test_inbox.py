"""The durable inbox on real SQLite and on the local PostgreSQL (the same cases on both): de-duplication
of deliveries, not of events; leases, retries and dead letters; what is on record; several inboxes on
one PostgreSQL database behaving as replicas."""

from __future__ import annotations

import stat
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import psycopg
import pytest

from scitt_oci.watch.events import DELETE, PUSH, RegistryEvent
from scitt_oci.watch.inbox import Inbox, PostgresInbox
from tests.unit.log.test_postgres_store import DSN

Factory = Callable[..., Inbox]

D = "sha256:5d8ae6143394fc080642b6caef7c25047c159df2874f0a71adef5c480be0d2f0"


@pytest.fixture(params=["sqlite", "postgres"])
def make(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Factory]:
    """Opens inboxes on one database (one file, or one PostgreSQL schema of this test's own)."""
    made: list[Inbox] = []
    schema = "t_" + uuid.uuid4().hex[:12]

    def factory(**kw: Any) -> Inbox:
        inbox = (
            Inbox(tmp_path / "watch.db", **kw) if request.param == "sqlite" else PostgresInbox(DSN, schema=schema, **kw)
        )
        made.append(inbox)
        return inbox

    yield factory
    for inbox in made:
        inbox.close()
    if request.param == "postgres":
        with psycopg.connect(DSN, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def test_a_redelivery_is_stored_once_and_a_push_after_a_delete_is_stored_again(make: Factory) -> None:
    inbox = make()
    push = RegistryEvent("demo/app", D, "v1", PUSH, delivery="evt-1")
    assert inbox.add("reg", [push]) == 1
    assert inbox.add("reg", [RegistryEvent("demo/app", D, "v1", PUSH, delivery="evt-1")]) == 0  # a redelivery
    assert inbox.add("reg", [RegistryEvent("demo/app", D, None, DELETE, delivery="evt-2")]) == 1
    assert inbox.add("reg", [RegistryEvent("demo/app", D, "v1", PUSH, delivery="evt-3")]) == 1  # pushed again
    # Late redeliveries of the first push and of the delete change nothing.
    assert inbox.add("reg", [RegistryEvent("demo/app", D, "v1", PUSH, delivery="evt-1")]) == 0
    assert inbox.add("reg", [RegistryEvent("demo/app", D, None, DELETE, delivery="evt-2")]) == 0
    # The same news without a sender's id (an index naming its platform manifests, polling) is no new event.
    assert inbox.add("reg", [RegistryEvent("demo/app", D, "v1", PUSH)]) == 0
    claimed = inbox.claim(10)
    assert [(i.event.action, i.event.delivery) for i in claimed] == [
        (PUSH, "evt-1"),
        (DELETE, "evt-2"),
        (PUSH, "evt-3"),
    ]
    # Senders that give no id: a redelivery is the same event, a push after a delete a new one.
    assert inbox.add("other", [RegistryEvent("demo/app", D, "v1", PUSH)]) == 1
    assert inbox.add("other", [RegistryEvent("demo/app", D, "v1", PUSH)]) == 0
    assert inbox.add("other", [RegistryEvent("demo/app", D, None, DELETE)]) == 1
    assert inbox.add("other", [RegistryEvent("demo/app", D, None, DELETE)]) == 0
    assert inbox.add("other", [RegistryEvent("demo/app", D, "v1", PUSH)]) == 1


def test_leases_retries_and_dead_letters(make: Factory) -> None:
    inbox = make(max_attempts=2, base_delay=0.0, lease_seconds=30)
    inbox.add("reg", [RegistryEvent("demo/app", D, "v1", PUSH), RegistryEvent("demo/b", D, "v1", PUSH)])
    first, second = inbox.claim(5)
    assert inbox.claim(5) == []  # both leased
    assert inbox.save_statement(first, b"one") == b"one"
    assert inbox.save_statement(first, b"two") == b"one"  # the first statement made is kept
    assert inbox.done(first)
    assert not inbox.failed(second, "registry down")  # one retry left
    (again,) = inbox.claim(5)
    assert again.id == second.id and again.attempts == 1 and again.statement is None
    assert inbox.failed(again, "still down")
    assert inbox.counts() == {"done": 1, "dead": 1}
    (letter,) = inbox.dead()
    assert letter.event.repository == "demo/b" and letter.reason == "still down" and letter.attempts == 2
    assert inbox.retry_dead() == 1
    (revived,) = inbox.claim(5)
    assert revived.id == second.id and revived.attempts == 0


def test_revive_queues_a_dead_letter_again_and_leaves_the_rest_alone(make: Factory) -> None:
    inbox = make(max_attempts=1, base_delay=0.0)
    events = [RegistryEvent("demo/app", D, "v1", PUSH), RegistryEvent("demo/b", D, "v1", PUSH)]
    inbox.add("reg", events)
    first, second = inbox.claim(2)
    assert inbox.failed(first, "registry down") and inbox.done(second)
    assert inbox.add("reg", events) == 0  # without revive: already stored
    assert inbox.add("reg", events, revive=True) == 1  # the dead one; the done one stays done
    (again,) = inbox.claim(2)
    assert again.id == first.id and again.attempts == 0 and inbox.counts() == {"done": 1, "pending": 1}
    assert inbox.add("reg", events, revive=True) == 0  # pending already


def test_an_outage_of_our_own_database_backs_off_but_never_dead_letters(make: Factory) -> None:
    inbox = make(max_attempts=2, base_delay=0.0)
    inbox.add("reg", [RegistryEvent("demo/app", D, "v1", PUSH)])
    for attempt in range(4):
        (item,) = inbox.claim(1)
        assert item.attempts == attempt
        assert not inbox.failed(item, "StoreUnavailable: the PostgreSQL log is out of reach", outage=True)
    assert inbox.counts() == {"pending": 1}
    (item,) = inbox.claim(1)
    assert inbox.failed(item, "registry down")  # an ordinary failure still counts


def test_an_expired_lease_is_taken_over_and_the_late_holder_cannot_finish(make: Factory) -> None:
    """A replica that stalls past its lease (or died) loses the event: another takes it, and the first
    one's late done/failed change nothing, so the event completes once."""
    slow, other = make(lease_seconds=0.2), make(lease_seconds=30)
    slow.add("reg", [RegistryEvent("demo/app", D, "v1", PUSH)])
    (stale,) = slow.claim(1)
    slow.save_statement(stale, b"statement")
    assert other.claim(1) == []
    deadline = time.monotonic() + 10
    taken: list[Any] = []
    while not taken and time.monotonic() < deadline:
        taken = other.claim(1)
    (item,) = taken
    assert item.id == stale.id and item.statement == b"statement"  # the same bytes get registered
    assert not slow.done(stale)
    slow.failed(stale, "late failure")
    assert other.counts() == {"pending": 1}
    assert other.done(item)
    assert not other.done(item)  # done once
    assert slow.counts() == {"done": 1}


def test_a_lease_is_renewed_by_its_holder_only(make: Factory) -> None:
    """Renewing moves the lease's end to `lease_seconds` from now while the holder still holds it; a
    lease lost (taken over, finished, failed) is not renewed, and its late holder cannot finish."""
    now = [1000.0]
    holder, other = make(lease_seconds=30, clock=lambda: now[0]), make(lease_seconds=30, clock=lambda: now[0])
    holder.add("reg", [RegistryEvent("demo/app", D, "v1", PUSH)])
    (item,) = holder.claim(1)  # held until 1030
    now[0] = 1020.0
    assert holder.renew(item)  # held until 1050
    assert not other.renew(replace(item, lease="someone-else/1/0"))  # another token renews nothing
    assert not other.renew(replace(item, lease=None))
    now[0] = 1040.0  # past the first lease, within the renewed one
    assert other.claim(1) == []
    now[0] = 1050.0
    (taken,) = other.claim(1)  # ran out: taken over
    assert taken.id == item.id and taken.lease != item.lease
    assert not holder.renew(item)  # lost: the holder is told so
    now[0] = 1070.0
    assert other.renew(taken)  # held until 1100, by the new holder alone
    now[0] = 1090.0
    assert holder.claim(1) == []
    assert not holder.done(item) and other.counts() == {"pending": 1}
    assert not other.failed(taken, "registry down")  # retried after a backoff of at most 0.5 s
    assert not other.renew(taken)  # failed: the lease is gone with it
    now[0] = 1091.0
    (again,) = other.claim(1)
    assert other.done(again)
    assert not other.renew(again)  # done: nothing to renew
    assert holder.counts() == {"done": 1}


def test_what_is_on_record(make: Factory) -> None:
    inbox = make()
    inbox.record(
        "reg", "demo/app", D, "push", D, "application/vnd.oci.image.manifest.v1+json", 512, "sha256:" + "1" * 64
    )
    inbox.record("reg", "demo/app", D, "note", "sha256:" + "2" * 64, None, None, None)
    assert inbox.is_recorded("reg", "demo/app", D) and not inbox.is_recorded("reg", "demo/other", D)
    assert inbox.pushed("reg", "demo/app", D) == ("application/vnd.oci.image.manifest.v1+json", 512)
    assert inbox.pushed("reg", "demo/app", "sha256:" + "2" * 64) is None
    (a,) = inbox.attachments("reg", before=time.time() + 1)
    assert (a.repository, a.subject, a.kind, a.referrer) == ("demo/app", D, "push", "sha256:" + "1" * 64)
    assert inbox.attachments("reg", before=time.time() - 3600) == []  # too young to check
    inbox.confirm("reg", [a])
    assert inbox.attachments("reg", before=time.time() + 1) == []
    assert inbox.attachments("reg", before=time.time() + 1, everything=True) == [a]
    # Recorded again (re-attached): unconfirmed again.
    inbox.record(
        "reg", "demo/app", D, "push", D, "application/vnd.oci.image.manifest.v1+json", 512, "sha256:" + "3" * 64
    )
    (b,) = inbox.attachments("reg", before=time.time() + 1)
    assert b.referrer == "sha256:" + "3" * 64


def test_replicas_claim_disjoint_events(make: Factory) -> None:
    """Three inboxes on one database, eight threads each, claiming as fast as they can: every event is
    handed out exactly once."""
    replicas = [make() for _ in range(3)]
    n = 120
    replicas[0].add("reg", [RegistryEvent(f"demo/app{i}", D, "v1", PUSH) for i in range(n)])
    claimed: list[int] = []
    lock = threading.Lock()

    def work(inbox: Inbox) -> None:
        while True:
            items = inbox.claim(2)
            if not items:
                if inbox.counts().get("pending", 0) == 0:
                    return
                continue
            for item in items:
                assert inbox.done(item)
            with lock:
                claimed.extend(i.id for i in items)

    threads = [
        threading.Thread(target=work, args=(r,))
        for r in replicas
        for _ in range(8 if isinstance(r, PostgresInbox) else 2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(claimed) == sorted(set(claimed)) and len(claimed) == n
    assert replicas[2].counts() == {"done": n}


def test_one_catalog_walker_at_a_time(make: Factory) -> None:
    a, b = make(), make()
    # PostgreSQL's advisory locks are database-wide: a name of this test's own keeps parallel runs apart.
    reg = "reg-" + uuid.uuid4().hex[:12]
    with a.exclusive(reg) as mine:
        assert mine
        with b.exclusive(reg) as theirs:
            assert not theirs  # another replica (or a backfill) walks now
        with b.exclusive(reg + "-other") as theirs:
            assert theirs  # per registry
    with b.exclusive(reg) as theirs:
        assert theirs  # released


def test_a_dead_replicas_walk_lock_is_released(tmp_path: Path) -> None:
    """The walk lock of a replica that dies goes with its database session."""
    schema = "t_" + uuid.uuid4().hex[:12]
    a, b = PostgresInbox(DSN, schema=schema), PostgresInbox(DSN, schema=schema)
    reg = "reg-" + schema
    try:
        walk = a.exclusive(reg)
        assert walk.__enter__()
        with b.exclusive(reg) as theirs:
            assert not theirs
        with psycopg.connect(DSN, autocommit=True) as admin:  # the replica's connection dies
            killed = admin.execute(
                # With a timeout it returns once the backend has gone (and its locks with it), not on the signal.
                "SELECT pg_terminate_backend(pid, 10000) FROM pg_locks WHERE locktype = 'advisory' AND classid = %s "
                "AND objid = %s AND granted",
                (0x5C1771B1, zlib.crc32(reg.encode()) - 2**31 & 0xFFFFFFFF),
            ).fetchall()
        assert killed == [(True,)]
        with b.exclusive(reg) as theirs:
            assert theirs
    finally:
        a.close()
        b.close()
        with psycopg.connect(DSN, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def test_database_files_are_private(tmp_path: Path) -> None:
    inbox = Inbox(tmp_path / "watch.db")
    inbox.add("reg", [RegistryEvent("demo/app", D, "v1", PUSH)])
    files = sorted(p for p in tmp_path.iterdir() if p.name.startswith("watch.db"))
    assert {p.name for p in files} >= {"watch.db", "watch.db-wal", "watch.db-shm"}
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in files), [oct(p.stat().st_mode) for p in files]


def test_dead_letters_print_control_characters_as_escapes(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from scitt_oci.cli import main

    inbox = Inbox(tmp_path / "watch.db", max_attempts=1)
    # Stored by an older version that did not validate tags.
    inbox.add("reg", [RegistryEvent("demo/app", None, "v1\r\n\x1b[2Jforged line", PUSH)])
    (item,) = inbox.claim(1)
    assert inbox.failed(item, "boom\rreason")
    result = CliRunner().invoke(main, ["watch", "dead-letters", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "\r" not in result.output and "\x1b" not in result.output
    assert "v1\\r\\n\\x1b[2Jforged line" in result.output and result.output.count("\n") == 2


def test_dead_letters_on_postgres_are_listed_and_retried_by_the_cli(tmp_path: Path, monkeypatch: Any) -> None:
    """`watch dead-letters` reads the inbox the replicas share, not a SQLite file that is not there."""
    from click.testing import CliRunner

    from scitt_oci.cli import main

    schema = "t_" + uuid.uuid4().hex[:12]
    inbox = PostgresInbox(DSN, schema=schema, max_attempts=1)
    monkeypatch.setenv("SCITT_OCI_STORAGE__BACKEND", "postgres")
    monkeypatch.setenv("SCITT_OCI_STORAGE__POSTGRES_DSN", DSN)
    monkeypatch.setenv("SCITT_OCI_STORAGE__POSTGRES_SCHEMA", schema)
    try:
        inbox.add("reg", [RegistryEvent("demo/app", D, "v1", PUSH)])
        (item,) = inbox.claim(1)
        assert inbox.failed(item, "the registry said no")
        listed = CliRunner().invoke(main, ["watch", "dead-letters", "--data-dir", str(tmp_path)])
        assert listed.exit_code == 0, listed.output
        assert "demo/app" in listed.output and "the registry said no" in listed.output
        assert "1 dead-lettered event(s)" in listed.output
        retried = CliRunner().invoke(main, ["watch", "dead-letters", "--data-dir", str(tmp_path), "--retry"])
        assert retried.exit_code == 0 and "1 event(s) queued again" in retried.output, retried.output
        assert inbox.counts() == {"pending": 1}
    finally:
        inbox.close()
        with psycopg.connect(DSN, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def test_a_lost_database_connection_is_made_again(tmp_path: Path) -> None:
    """A database restart or failover drops the replica's connections: the inbox connects again
    instead of failing every claim (which would stop the workers) or the next webhook."""
    schema = "t_" + uuid.uuid4().hex[:12]
    inbox = PostgresInbox(DSN, schema=schema)

    def drop_connection() -> None:
        pid = inbox._conn().info.backend_pid
        with psycopg.connect(DSN, autocommit=True) as admin:
            assert admin.execute("SELECT pg_terminate_backend(%s, 10000)", (pid,)).fetchone() == (True,)

    try:
        inbox.add("reg", [RegistryEvent("demo/app", D, "v1", PUSH)])
        drop_connection()
        (item,) = inbox.claim(1)
        drop_connection()
        assert inbox.done(item)
        drop_connection()
        assert inbox.add("reg", [RegistryEvent("demo/b", D, "v1", PUSH)]) == 1  # a transaction, run again
        drop_connection()
        assert inbox.counts() == {"done": 1, "pending": 1}
    finally:
        inbox.close()
        with psycopg.connect(DSN, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def test_a_waiting_walker_gets_the_walk_once_it_is_free(make: Factory) -> None:
    a, b = make(), make()
    reg = "reg-" + uuid.uuid4().hex[:12]  # advisory locks are database-wide (see above)
    with a.exclusive(reg, wait=True) as mine:
        assert mine
        with b.exclusive(reg) as theirs:
            assert not theirs
    with b.exclusive(reg, wait=True) as theirs:
        assert theirs


def test_a_database_from_an_older_version_gains_the_new_columns(tmp_path: Path) -> None:
    import sqlite3

    old = sqlite3.connect(tmp_path / "watch.db")
    old.executescript(
        "CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, registry TEXT NOT NULL, key TEXT NOT NULL, "
        "event TEXT NOT NULL, state TEXT NOT NULL DEFAULT 'pending', attempts INTEGER NOT NULL DEFAULT 0, "
        "next_at REAL NOT NULL DEFAULT 0, last_error TEXT, statement BLOB, lease_until REAL NOT NULL DEFAULT 0, "
        "created REAL NOT NULL, updated REAL NOT NULL, UNIQUE (registry, key));"
        "CREATE TABLE recorded (registry TEXT NOT NULL, repository TEXT NOT NULL, subject TEXT NOT NULL, "
        "kind TEXT NOT NULL, recorded TEXT NOT NULL, media_type TEXT, size INTEGER, referrer TEXT, "
        "created REAL NOT NULL, PRIMARY KEY (registry, repository, subject, kind, recorded)) WITHOUT ROWID;"
    )
    old.close()
    inbox = Inbox(tmp_path / "watch.db")
    try:
        assert inbox.add("reg", [RegistryEvent("demo/app", D, "v1", PUSH)]) == 1
        (item,) = inbox.claim(1)
        assert item.lease is not None and inbox.done(item)
        inbox.record("reg", "demo/app", D, "push", D, "application/vnd.oci.image.manifest.v1+json", 10, D)
        (attached,) = inbox.attachments("reg", before=time.time() + 1)
        inbox.confirm("reg", [attached])
        assert inbox.attachments("reg", before=time.time() + 1) == []
    finally:
        inbox.close()


def test_a_postgres_inbox_that_cannot_open_says_why_without_the_dsn() -> None:
    from scitt_oci.errors import InboxError

    with pytest.raises(InboxError, match="must be a lower-case identifier"):
        PostgresInbox(DSN, schema="Robert'); DROP TABLE events;--")
    with pytest.raises(InboxError, match=r"^cannot open the PostgreSQL inbox \(OperationalError: ") as caught:
        PostgresInbox("host=127.0.0.1 port=1 user=watcher password=hunter2 connect_timeout=2", schema="t_x")
    assert "hunter2" not in str(caught.value)


def test_a_postgres_inbox_out_of_reach_is_inbox_unavailable_for_every_call_until_it_is_back() -> None:
    """Each call while the database refuses connections is one `InboxUnavailable` (a ScittOciError the
    workers, the webhooks and backfill know to wait out) naming no password; nothing is kept broken."""
    from scitt_oci.errors import InboxUnavailable, StoreUnavailable
    from tests.unit.log.test_postgres_store import _cut, dropped

    schema = "t_" + uuid.uuid4().hex[:12]
    with dropped(schema):
        inbox = PostgresInbox(f"{DSN} application_name={schema}", schema=schema)
        try:
            inbox.add("reg", [RegistryEvent("demo/app", D, "v1", PUSH)])
            (item,) = inbox.claim(1)
            working = inbox._dsn
            inbox._dsn = "host=127.0.0.1 port=1 user=watcher password=hunter2 connect_timeout=2"
            _cut(schema)
            calls: list[Callable[[], object]] = [
                lambda: inbox.claim(1),
                lambda: inbox.add("reg", [RegistryEvent("demo/app", D, "v2", PUSH)]),
                inbox.counts,
                lambda: inbox.done(item),
                lambda: inbox.failed(item, "registry down"),
                lambda: inbox.exclusive("reg").__enter__(),
            ]
            for call in calls:
                with pytest.raises(InboxUnavailable, match="the PostgreSQL inbox is out of reach") as caught:
                    call()
                assert isinstance(caught.value, StoreUnavailable) and "hunter2" not in str(caught.value)
            inbox._dsn = working  # back
            assert inbox.done(item) and inbox.counts() == {"done": 1}
            assert inbox.add("reg", [RegistryEvent("demo/app", D, "v2", PUSH)]) == 1
        finally:
            inbox.close()


def test_an_outage_retried_for_days_still_schedules_its_retry(make: Factory) -> None:
    """An outage is retried without end: after 1,100 tries the backoff must not overflow a float (it
    raised OverflowError, the retry was never stored, and the event waited on its lease instead)."""
    now = [1_000_000.0]
    inbox = make(base_delay=0.5, max_delay=300.0, clock=lambda: now[0])
    inbox.add("reg", [RegistryEvent("demo/app", D, "v1", PUSH)])
    (item,) = inbox.claim(1)
    assert not inbox.failed(replace(item, attempts=1100), "StoreUnavailable: away", outage=True)
    assert inbox.claim(1) == []  # not due yet
    now[0] += 300.5  # at most max_delay later
    (again,) = inbox.claim(1)
    assert again.id == item.id and again.attempts == 1101


def test_sqlite_answers_are_an_outage_only_when_the_database_cannot_be_used(tmp_path: Path) -> None:
    """A full disk or a lock held too long is the database out of reach (retried, never dead-lettered);
    a statement the database refuses (a missing table) is a fault of ours, raised as it is."""
    import sqlite3

    from scitt_oci.errors import InboxUnavailable

    inbox = Inbox(tmp_path / "watch.db")
    try:
        full = sqlite3.OperationalError("database or disk is full")
        full.sqlite_errorcode = 13  # SQLITE_FULL, as the driver sets it
        assert isinstance(inbox._unavailable(full), InboxUnavailable)
        with sqlite3.connect(tmp_path / "watch.db") as other:
            other.execute("DROP TABLE transitions")
        with pytest.raises(sqlite3.OperationalError, match="no such table: transitions"):
            inbox.add("reg", [RegistryEvent("demo/app", D, "v1", PUSH)])
    finally:
        inbox.close()
