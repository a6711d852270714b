"""The durable inbox on real SQLite: de-duplication of deliveries, not of events."""

from __future__ import annotations

import stat
from pathlib import Path

from scitt_oci.watch.events import DELETE, PUSH, RegistryEvent
from scitt_oci.watch.inbox import Inbox

D = "sha256:5d8ae6143394fc080642b6caef7c25047c159df2874f0a71adef5c480be0d2f0"


def test_a_redelivery_is_stored_once_and_a_push_after_a_delete_is_stored_again(tmp_path: Path) -> None:
    inbox = Inbox(tmp_path / "watch.db")
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
    assert [(i.event.action, i.event.delivery) for i in claimed] == [(PUSH, "evt-1"), (DELETE, "evt-2"), (PUSH, "evt-3")]
    # Senders that give no id: a redelivery is the same event, a push after a delete a new one.
    assert inbox.add("other", [RegistryEvent("demo/app", D, "v1", PUSH)]) == 1
    assert inbox.add("other", [RegistryEvent("demo/app", D, "v1", PUSH)]) == 0
    assert inbox.add("other", [RegistryEvent("demo/app", D, None, DELETE)]) == 1
    assert inbox.add("other", [RegistryEvent("demo/app", D, None, DELETE)]) == 0
    assert inbox.add("other", [RegistryEvent("demo/app", D, "v1", PUSH)]) == 1


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
