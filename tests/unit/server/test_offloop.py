"""offloop's pools in process: a call past its deadline is a 503 error and leaves its thread to finish;
a call still queued at its deadline never runs; a backlog past BACKLOG is refused at once."""

from __future__ import annotations

import asyncio
import threading

import pytest

from scitt_oci.errors import StoreUnavailable
from scitt_oci.server import offloop


def test_calls_past_their_deadline_are_503s_and_queued_ones_never_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(offloop, "_pools", {})
    monkeypatch.setattr(offloop, "READERS", 1)
    stalled, ran = threading.Event(), []

    def stuck() -> None:
        assert stalled.wait(30)

    async def scenario() -> None:
        with pytest.raises(StoreUnavailable, match="the log store did not answer within 0.05 s"):
            await offloop.read(stuck, what="the log store", deadline=0.05)  # holds the only thread
        with pytest.raises(StoreUnavailable):
            await offloop.read(lambda: ran.append(1), deadline=0.05)  # queued behind it
        monkeypatch.setattr(offloop, "BACKLOG", 1)
        with pytest.raises(StoreUnavailable, match=r"not keeping up \(1 calls wait for it\)"):
            await offloop.read(lambda: ran.append(2), deadline=5)
        monkeypatch.setattr(offloop, "BACKLOG", 1024)
        stalled.set()  # the database answers again
        assert await offloop.read(lambda: "answered", deadline=5) == "answered"

    asyncio.run(scenario())
    assert ran == []  # the dropped call never ran, even once the thread was free
