"""backfill while its PostgreSQL inbox is out of reach: each of its steps (the listing, the wait for
the workers, the check of attachments) waits for the database as the workers do, and gives up with one
line (exit 2 in the CLI) only after OUTAGE_PATIENCE, saying how to go on."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from scitt_oci.cli import watch as watch_cli
from scitt_oci.errors import InboxUnavailable
from scitt_oci.watch.events import PUSH, RegistryEvent
from scitt_oci.watch.inbox import PostgresInbox
from tests.unit.log.test_postgres_store import DSN, _cut, dropped

D = "sha256:5d8ae6143394fc080642b6caef7c25047c159df2874f0a71adef5c480be0d2f0"
AWAY = "host=127.0.0.1 port=1 user=watcher password=hunter2 connect_timeout=2"


@pytest.fixture
def inbox() -> Iterator[PostgresInbox]:
    """An inbox holding one pending event, whose database has just gone out of reach."""
    schema = "t_" + uuid.uuid4().hex[:12]
    with dropped(schema):
        inbox = PostgresInbox(f"{DSN} application_name={schema}", schema=schema)
        inbox.add("reg", [RegistryEvent("demo/app", D, "v1", PUSH)])
        inbox._dsn = AWAY
        _cut(schema)
        try:
            yield inbox
        finally:
            inbox.close()


def test_backfill_waits_for_its_database_to_come_back(
    inbox: PostgresInbox, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = inbox.counts
    calls = []

    def counts() -> dict[str, int]:
        calls.append(1)
        if len(calls) == 3:  # the database is back on the third look
            inbox._dsn = f"{DSN} application_name=back"
        return real()

    monkeypatch.setattr(inbox, "counts", counts)
    monkeypatch.setattr(watch_cli, "OUTAGE_PAUSE", 0.0)  # no need to pace the looks here
    assert watch_cli._patiently(lambda: counts()["pending"]) == 1 and len(calls) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the PostgreSQL inbox is out of reach" in err and "waiting" in err
    assert "hunter2" not in err


def test_backfill_gives_up_after_its_patience_saying_how_to_go_on(
    inbox: PostgresInbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(watch_cli, "OUTAGE_PATIENCE", 0.0)
    monkeypatch.setattr(watch_cli, "OUTAGE_PAUSE", 0.0)
    with pytest.raises(InboxUnavailable, match=r"out of reach .* for over 0 s; run backfill again when it is back"):
        watch_cli._patiently(inbox.counts)
