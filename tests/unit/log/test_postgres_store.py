"""The log store on a real PostgreSQL server: same behaviour as SQLite, and several writers (replicas)
sharing one log."""

from __future__ import annotations

import contextlib
import os
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import cbor2
import psycopg
import pytest
from starlette.testclient import TestClient

from scitt_oci.errors import StoreError, StoreUnavailable
from scitt_oci.log.policy import RegistrationPolicy
from scitt_oci.log.postgres_store import PostgresStore
from scitt_oci.log.service import TransparencyService
from scitt_oci.log.store import Pending, entry_id
from scitt_oci.scitt import merkle, receipt
from scitt_oci.server.app import Settings, create_app
from tests.helpers import key
from tests.stallproxy import stall_proxy
from tests.unit.server import support

COSE = {"content-type": "application/cose"}
DSN = os.environ.get("SCITT_OCI_TEST_PG_DSN", "host=127.0.0.1 user=postgres dbname=test")


def _sign(size: int, root: bytes) -> receipt.SignedTreeHead:
    return receipt.sign_tree_head(key(slot=9), issuer="https://ts", subject="log", tree_size=size, root=root)


@contextlib.contextmanager
def dropped(name: str) -> Iterator[str]:
    """Schema `name`, dropped with all it holds at the end."""
    try:
        yield name
    finally:
        with psycopg.connect(DSN, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


@pytest.fixture
def schema() -> Iterator[str]:
    with dropped("t_" + uuid.uuid4().hex[:12]) as name:
        yield name


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


def _cut(application: str) -> int:
    """Ends every server session of `application`, as a database restart or failover would."""
    with psycopg.connect(DSN, autocommit=True) as admin:
        rows = admin.execute(
            "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity WHERE application_name = %s",
            (application,),
        ).fetchall()
    return len(rows)


def test_connections_cut_by_the_server_are_made_again(schema: str) -> None:
    """A database restart or failover ends every session: reads and the next batch connect again
    instead of failing until the replica is restarted."""
    store = PostgresStore(f"{DSN} application_name={schema}", schema=schema)
    try:
        store.commit(accept=[], integrate=[_p("c", 0)], sign=_sign, now=1)
        assert store.size() == 1
        assert _cut(schema) == 2  # the writer's session and this thread's reader
        assert store.size() == 1 and store.entry(0) == b"c entry 0"
        assert _cut(schema) == 1  # the new reader (the writer connects again when it next writes)
        result = store.commit(accept=[], integrate=[_p("c", 1), _p("c", 0)], sign=_sign, now=2)
        assert result.integrated == {_p("c", 0).entry_id: 0, _p("c", 1).entry_id: 1}
        assert store.size() == 2 and store.lookup(_p("c", 1).entry_id) == 1
    finally:
        store.close()


def test_a_database_out_of_reach_is_store_unavailable_until_it_is_back(schema: str) -> None:
    store = PostgresStore(f"{DSN} application_name={schema}", schema=schema)
    try:
        store.commit(accept=[], integrate=[_p("u", 0)], sign=_sign, now=1)
        working = store._dsn
        store._dsn = "host=127.0.0.1 port=1 user=scitt password=hunter2 connect_timeout=2"  # nothing listens
        _cut(schema)
        with pytest.raises(StoreUnavailable, match="out of reach") as read:
            store.size()
        with pytest.raises(StoreUnavailable, match="out of reach") as write:
            store.commit(accept=[], integrate=[_p("u", 1)], sign=_sign, now=2)
        assert "hunter2" not in str(read.value) + str(write.value)
        store._dsn = working  # the database is back
        store.commit(accept=[], integrate=[_p("u", 1)], sign=_sign, now=3)
        assert store.size() == 2
    finally:
        store.close()


def test_the_service_answers_503_while_the_database_is_out_of_reach_and_recovers(
    schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    """503s with Retry-After, each logged as one warning line: no traceback in the log, and nothing raised
    past the app to the server (which would log one more; the client here raises what reaches it)."""
    store = PostgresStore(f"{DSN} application_name={schema}", schema=schema)
    policy = RegistrationPolicy.build(issuer_keys=[support.ISSUER_KEY])
    service = TransparencyService(store, support.TS_KEY, policy, identity="https://ts.example")
    app = create_app(service, Settings())
    with support.running(service), TestClient(app, raise_server_exceptions=True) as http:
        assert http.post("/entries", content=support.statement_bytes(1), headers=COSE).status_code == 201
        working = store._dsn
        store._dsn = "host=127.0.0.1 port=1 connect_timeout=2"
        _cut(schema)
        with caplog.at_level("WARNING"):
            for path in ("/readyz", "/checkpoint", "/metrics", "/consistency?from=1", f"/entries/{'ab' * 32}"):
                answer = http.get(path)
                assert answer.status_code == 503, (path, answer.text)
                detail = cbor2.loads(answer.content)[-2]
                assert "out of reach" in detail, (path, detail)
            refused = http.post("/entries", content=support.statement_bytes(2), headers=COSE)
            assert refused.status_code == 503 and refused.headers["retry-after"] == "5"
            assert "out of reach" in cbor2.loads(refused.content)[-2]
        assert caplog.records and not [r for r in caplog.records if r.exc_info], "a traceback was logged"
        store._dsn = working
        assert http.get("/readyz").status_code == 200
        assert http.post("/entries", content=support.statement_bytes(2), headers=COSE).status_code == 201
        assert http.get("/checkpoint").status_code == 200


def test_a_schema_another_tool_owns_is_refused_before_anything_is_made(schema: str) -> None:
    from scitt_oci.errors import InboxError
    from scitt_oci.watch.inbox import PostgresInbox

    with psycopg.connect(DSN, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
        admin.execute(f"CREATE TABLE {schema}.users (id INTEGER)")
        admin.execute(f"CREATE TABLE {schema}.events (id INTEGER, what TEXT)")  # a name ours has too
    refused = (
        rf"schema {schema} holds tables that are not scitt-oci's \(events \(id is int4, not int8, no registry, "
        r"no key, \.\.\.\); users\)"
    )
    with pytest.raises(StoreError, match=refused):
        PostgresStore(DSN, schema=schema)
    with pytest.raises(InboxError, match=refused + ": give scitt-oci a schema of its own"):
        PostgresInbox(DSN, schema=schema)
    with psycopg.connect(DSN, autocommit=True) as admin:
        tables = admin.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s ORDER BY 1", (schema,)
        ).fetchall()
    assert tables == [("events",), ("users",)]
    # The log and the inbox share their own schema: each finds only the other's tables there.
    own = schema + "_own"
    try:
        PostgresStore(DSN, schema=own).close()
        PostgresInbox(DSN, schema=own).close()
        PostgresStore(DSN, schema=own).close()
    finally:
        with psycopg.connect(DSN, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA IF EXISTS {own} CASCADE")


def _in_thread(call: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    """`call()` in a thread of its own; its answer lands in the list."""
    answers: list[Any] = []
    thread = threading.Thread(target=lambda: answers.append(call()), daemon=True)
    thread.start()
    return thread, answers


def test_a_stalled_database_costs_its_readers_a_503_never_the_event_loop(
    schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection to PostgreSQL stops answering (a partition, a wedged proxy): requests that read the
    log answer 503 at their deadline, while /healthz, and everything else that needs no database, answers
    at once; once the database answers again, so do they."""
    from scitt_oci.server import offloop, operations

    monkeypatch.setattr(offloop, "DEADLINE", 1.0)
    monkeypatch.setattr(operations, "READY_DEADLINE", 1.0)
    port = int(psycopg.conninfo.conninfo_to_dict(DSN).get("port") or 5432)
    with stall_proxy(port) as proxy:
        dsn = psycopg.conninfo.make_conninfo(DSN, host="127.0.0.1", port=str(proxy.port))
        store = PostgresStore(dsn, schema=schema)
        policy = RegistrationPolicy.build(issuer_keys=[support.ISSUER_KEY])
        service = TransparencyService(store, support.TS_KEY, policy, identity="https://ts.example", accept_timeout=1.0)
        with support.running(service), support.client(service) as http:
            assert http.post("/entries", content=support.statement_bytes(1), headers=COSE).status_code == 201
            assert http.get("/checkpoint").status_code == 200  # this thread's reader is connected
            proxy.stall()
            stuck, answers = _in_thread(lambda: [http.get(p) for p in ("/checkpoint", "/metrics", "/readyz")])
            writing, written = _in_thread(
                lambda: http.post("/entries", content=support.statement_bytes(2), headers=COSE)
            )
            health, healthy = _in_thread(lambda: http.get("/healthz"))
            health.join(5)
            assert healthy and healthy[0].status_code == 200, "the event loop is held by a stalled read"
            stuck.join(30)
            assert [a.status_code for a in answers[0]] == [503, 503, 503]
            for answer in answers[0]:
                assert "did not answer within" in cbor2.loads(answer.content)[-2]
            writing.join(30)
            assert written and written[0].status_code == 503 and written[0].headers["retry-after"] == "5"
            assert "durable within 1 s" in cbor2.loads(written[0].content)[-2]
            # Many requests during the stall: 503s, and no more database connections than reader threads
            # (a thread per request would open a connection each, as many as requests arrive).
            connected = proxy.connections
            crowd = [_in_thread(lambda: http.get("/checkpoint")) for _ in range(3 * offloop.READERS)]
            for thread, answer in crowd:
                thread.join(30)
                assert answer and answer[0].status_code == 503
            assert proxy.connections - connected <= offloop.READERS
            proxy.flow()
            assert http.get("/checkpoint").status_code == 200 and http.get("/readyz").status_code == 200
            # The registration answered 503 may have landed since: sent again, it is one entry.
            assert http.post("/entries", content=support.statement_bytes(2), headers=COSE).status_code == 201
            assert store.size() == 2


@pytest.mark.parametrize(
    ("table", "columns", "why"),
    [
        ("tiles", "id INTEGER", "no level, no idx, no hashes, ..."),
        ("events", "id INTEGER", "id is int4, not int8, no registry, no key, ..."),
        (
            "entries",
            "idx TEXT, id_prefix TEXT, entry TEXT",
            "idx is text, not int8, id_prefix is text, not int4, entry is text, not bytea",
        ),
        ("entries", "idx BIGINT, id_prefix INTEGER, entry BYTEA, extra INTEGER NOT NULL", "column extra is not ours"),
        ("meta", "key INTEGER, value INTEGER", "key is int4, not text, value is int4, not int8"),
    ],
)
def test_a_table_named_as_ours_with_other_columns_is_refused_alone(
    schema: str, table: str, columns: str, why: str
) -> None:
    """A lone foreign table that shares a name with one of ours (a `tiles` of another tool, an `entries`
    with our column names and other types) is not taken for ours: neither the log nor the inbox makes
    anything or starts, and the message says what differs."""
    from scitt_oci.errors import InboxError
    from scitt_oci.watch.inbox import PostgresInbox

    with psycopg.connect(DSN, autocommit=True) as admin:
        admin.execute(f"CREATE SCHEMA {schema}")
        admin.execute(f"CREATE TABLE {schema}.{table} ({columns})")
    refused = re.escape(f"not scitt-oci's ({table} ({why}))")
    with pytest.raises(StoreError, match=refused):
        PostgresStore(DSN, schema=schema)
    with pytest.raises(InboxError, match=refused):
        PostgresInbox(DSN, schema=schema)
    with psycopg.connect(DSN, autocommit=True) as admin:
        tables = admin.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,)
        ).fetchall()
    assert tables == [(table,)]


def test_the_columns_the_schema_guard_expects_are_the_tables_made(schema: str) -> None:
    from scitt_oci import pgdriver
    from scitt_oci.watch.inbox import PostgresInbox

    PostgresStore(DSN, schema=schema).close()
    PostgresInbox(DSN, schema=schema).close()
    with psycopg.connect(DSN, autocommit=True) as admin:
        rows = admin.execute(
            "SELECT table_name, column_name, udt_name FROM information_schema.columns WHERE table_schema = %s "
            "ORDER BY table_name, ordinal_position",
            (schema,),
        ).fetchall()
        assert pgdriver.foreign_tables(admin, schema) == []
    made: dict[str, tuple[tuple[str, str], ...]] = {}
    for table, column, kind in rows:
        made[table] = (*made.get(table, ()), (column, kind))
    assert made == pgdriver.COLUMNS
