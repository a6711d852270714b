"""The TransparencyService in process: register (and wait), receipts, checkpoints, consistency proofs."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from scitt_oci.errors import ScittOciError, StoreUnavailable
from scitt_oci.log.policy import Rejection, RejectionKind
from scitt_oci.log.sequencer import Overloaded
from scitt_oci.log.service import Accepted, ConsistencyError, NotAccepted, Registered
from scitt_oci.log.store import entry_id
from scitt_oci.scitt import receipt, statement
from scitt_oci.server.scrapi import REJECTION_STATUS
from tests.unit.server.support import ISSUER_KEY, TS_KEY, make_service, running, statement_bytes


def _verified(data: bytes, found: bytes) -> receipt.VerifiedReceipt:
    return receipt.verify_receipt(found, statement.parse(data), [TS_KEY])


def test_register_waits_for_integration_and_answers_a_verifiable_receipt(tmp_path: Path) -> None:
    with running(make_service(tmp_path)) as service:
        data = statement_bytes(1)
        outcome = service.register(data, wait=10)
        assert isinstance(outcome, Registered)
        assert outcome.entry_id == entry_id(statement.parse(data).entry())
        checked = _verified(data, outcome.receipt)
        assert (checked.leaf_index, checked.tree_size) == (0, 1)
        # The same statement again: the same entry and the same receipt, and no second leaf.
        again = service.register(data, wait=10)
        assert again == outcome
        assert service.receipt(outcome.entry_id) == outcome.receipt
        assert service.store.size() == 1


def test_register_async_gives_the_same_outcomes_as_register(tmp_path: Path) -> None:
    with running(make_service(tmp_path)) as service:
        first, second = asyncio.run(_two(service))
        assert isinstance(first, Registered) and isinstance(second, Registered)
        assert _verified(statement_bytes(1), first.receipt).leaf_index is not None
        assert {first.entry_id, second.entry_id} == {
            entry_id(statement.parse(statement_bytes(n)).entry()) for n in (1, 2)
        }
        assert service.store.size() == 2


async def _two(service: object) -> tuple[object, object]:
    from scitt_oci.log.service import TransparencyService

    assert isinstance(service, TransparencyService)
    a, b = await asyncio.gather(
        service.register_async(statement_bytes(1), 10), service.register_async(statement_bytes(2), 10)
    )
    return a, b


def test_an_accepted_statement_is_pending_then_gets_its_receipt(tmp_path: Path) -> None:
    # Batches are due every 30 s: a registration is made durable at once, and integrated only at stop.
    service = make_service(tmp_path, max_delay=30)
    service.start()
    data = statement_bytes(3)
    outcome = service.register(data, wait=0)
    assert isinstance(outcome, Accepted)
    assert service.pending(outcome.entry_id) and service.receipt(outcome.entry_id) is None
    assert service.store.is_pending(outcome.entry_id)  # durable before the answer
    service.stop()
    service.store.close()
    # A restarted service integrates the backlog first; the receipt is then found by entry id alone.
    with running(make_service(tmp_path)) as again:
        later = again.register(data, wait=10)
        assert isinstance(later, Registered) and later.entry_id == outcome.entry_id
        assert again.receipt(outcome.entry_id) == later.receipt
        assert not again.pending(outcome.entry_id)


def test_async_registration_that_does_not_integrate_in_time_is_accepted(tmp_path: Path) -> None:
    service = make_service(tmp_path, max_delay=30)
    service.start()
    try:
        outcome = asyncio.run(service.register_async(statement_bytes(4), 0.05))
        assert isinstance(outcome, Accepted) and service.pending(outcome.entry_id)
    finally:
        service.stop()
        service.store.close()


def test_registration_refused_by_the_policy_raises_rejection(tmp_path: Path) -> None:
    with running(make_service(tmp_path)) as service:
        with pytest.raises(Rejection, match="not trusted by this log"):
            service.register(statement_bytes(5, slot=22), wait=1)
        with pytest.raises(Rejection):
            service.register(b"not cbor at all", wait=1)
        assert service.store.size() == 0


def test_entries_over_the_tiles_limit_are_refused_as_too_large(tmp_path: Path) -> None:
    with running(make_service(tmp_path, max_entry_bytes=64)) as service:
        with pytest.raises(Rejection, match="C2SP tiles") as info:
            service.register(statement_bytes(6), wait=1)
        assert info.value.kind is RejectionKind.TOO_LARGE
        assert REJECTION_STATUS[info.value.kind] == 413


def test_a_statement_the_sequencer_never_accepts_is_not_accepted(tmp_path: Path) -> None:
    """A commit stuck past accept_timeout (a stalled database) is the store out of reach: retried later."""
    service = make_service(tmp_path, accept_timeout=0.05, max_queue=1)  # the sequencer is never started
    try:
        with pytest.raises(StoreUnavailable, match="did not make entry [0-9a-f]{64} durable within 0.05 s"):
            service.register(statement_bytes(7), wait=1)
        with pytest.raises(StoreUnavailable):  # the same entry, still in flight: the same registration
            asyncio.run(service.register_async(statement_bytes(7), 1))
        with pytest.raises(Overloaded, match="already waiting"):
            service.register(statement_bytes(8), wait=1)
    finally:
        service.store.close()


def test_a_statement_the_store_fails_to_commit_is_not_accepted(tmp_path: Path) -> None:
    service = make_service(tmp_path)

    def failing_commit(**kw: Any) -> None:
        raise OSError("disk full")

    service.store.commit = failing_commit  # type: ignore[method-assign,assignment]  # a store whose commits fail
    with running(service):
        with pytest.raises(NotAccepted, match=r"\(OSError\); retry later"):
            service.register(statement_bytes(30), wait=10)
        with pytest.raises(NotAccepted, match=r"\(OSError\); retry later"):
            asyncio.run(service.register_async(statement_bytes(31), 10))


def test_receipts_of_unknown_entries_are_none(tmp_path: Path) -> None:
    with running(make_service(tmp_path)) as service:
        assert service.receipt(b"\0" * 32) is None
        assert not service.pending(b"\0" * 32)


def test_keys_and_key_lookup_by_any_alias(tmp_path: Path) -> None:
    with running(make_service(tmp_path)) as service:
        published = service.keys()
        assert [k.kid for k in published] == [TS_KEY.kid]
        assert service.find_key(TS_KEY.kid) is service.key
        assert service.find_key(ISSUER_KEY.kid) is None


def test_checkpoints_and_consistency_proofs_between_batches(tmp_path: Path) -> None:
    with running(make_service(tmp_path)) as service:
        assert service.checkpoint() is None
        with pytest.raises(ConsistencyError, match="the log is empty"):
            service.consistency(1)
        service.register(statement_bytes(10), wait=10)
        size1, root1, _ = receipt.read_checkpoint(service.checkpoint() or b"", [TS_KEY])
        assert size1 == 1
        for n in range(11, 14):
            service.register(statement_bytes(n), wait=10)
        size2, root2, _ = receipt.read_checkpoint(service.checkpoint() or b"", [TS_KEY])
        assert size2 == 4 and root2 != root1
        new_size, new_root, verified = receipt.verify_consistency_receipt(
            service.consistency(1), old_size=1, old_root=root1, keys=[TS_KEY], require_signed_size=True
        )
        assert (new_size, new_root, verified.size_signed) == (4, root2, True)
        # To an earlier batch boundary, and refusals for sizes the log cannot prove between.
        assert (
            receipt.verify_consistency_receipt(service.consistency(1, 2), old_size=1, old_root=root1, keys=[TS_KEY])[0]
            == 2
        )
        with pytest.raises(ConsistencyError, match="no signed tree head of size 99"):
            service.consistency(1, 99)
        for old in (0, 5):
            with pytest.raises(ConsistencyError, match=f"from size {old} to size 4"):
                service.consistency(old)


def test_a_logged_entry_without_a_covering_head_is_an_error(tmp_path: Path) -> None:
    with running(make_service(tmp_path)) as service:
        outcome = service.register(statement_bytes(20), wait=10)
        assert isinstance(outcome, Registered)
    # A fresh service over the same store (no cached receipts), whose store lost its heads.
    service = make_service(tmp_path)
    try:
        service.store.head_covering = lambda index: None  # type: ignore[method-assign]  # a store that lost its heads
        with pytest.raises(ScittOciError, match="no tree head covering it"):
            service.receipt(outcome.entry_id)
    finally:
        service.store.close()


def test_async_registrations_of_one_batch_wake_their_loop_once(tmp_path: Path) -> None:
    service = make_service(tmp_path)  # not started: the registrations queue up, then make one batch
    try:
        handed_over, outcomes = asyncio.run(_many(service, 40))
        assert service.store.size() == 40
    finally:
        service.stop()
        service.store.close()
    assert all(isinstance(o, Registered) for o in outcomes)
    assert len({o.entry_id for o in outcomes if isinstance(o, Registered)}) == 40
    for o in outcomes:
        assert isinstance(o, Registered)
        assert _verified(statement_bytes(100 + outcomes.index(o)), o.receipt).tree_size == 40
    # The sequencer handed the whole batch's outcomes to the loop at once, not one per registration.
    assert handed_over == 1


async def _many(service: object, n: int) -> tuple[int, list[object]]:
    from scitt_oci.log.service import TransparencyService

    assert isinstance(service, TransparencyService)
    loop = asyncio.get_running_loop()
    calls = 0
    original = loop.call_soon_threadsafe

    def counting(*args: Any, **kw: Any) -> Any:
        nonlocal calls
        calls += 1
        return original(*args, **kw)

    loop.call_soon_threadsafe = counting  # type: ignore[method-assign,assignment]  # counted, then passed on
    tasks = [asyncio.ensure_future(service.register_async(statement_bytes(100 + i), 10)) for i in range(n)]
    while service.waiting < n:
        await asyncio.sleep(0.001)
    service.start()
    outcomes = await asyncio.gather(*tasks)
    return calls, list(outcomes)


def test_a_cancelled_async_registration_leaves_no_waiter_behind(tmp_path: Path) -> None:
    service = make_service(tmp_path, max_delay=30)
    service.start()
    try:

        async def cancelled() -> None:
            task = asyncio.ensure_future(service.register_async(statement_bytes(200), 10))
            await asyncio.sleep(0)
            while not service.waiting:
                await asyncio.sleep(0.001)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(cancelled())
        eid = entry_id(statement.parse(statement_bytes(200)).entry())
        reg = service.sequencer._inflight[eid]
        assert reg.waiters == [] and reg.accepted.result(5) is None  # still durable and integrated later
    finally:
        service.stop()
        service.store.close()


def test_async_waits_are_answered_by_their_deadline(tmp_path: Path) -> None:
    """Fifty registrations waiting 0.2 s for a batch that is not due for 30 s: each accepted once its
    deadline passes (their timers are shared: see the next test), none before it."""
    service = make_service(tmp_path, max_delay=30)
    service.start()
    try:

        async def many() -> tuple[list[Any], float]:
            started = time.monotonic()
            outcomes = await asyncio.gather(*(service.register_async(statement_bytes(300 + i), 0.2) for i in range(50)))
            return list(outcomes), time.monotonic() - started

        outcomes, took = asyncio.run(many())
        assert all(isinstance(o, Accepted) for o in outcomes)
        assert 0.2 <= took < 5  # not before the deadline; and long before the batch is due
    finally:
        service.stop()
        service.store.close()


def test_deadlines_within_one_slot_share_one_timer() -> None:
    """Waiters whose deadlines fall in one 10 ms slot are woken by one timer, at or after the slot's end;
    a waiter already woken by its batch is left alone."""
    from scitt_oci.log.service import _Deadlines

    scheduled: list[tuple[float, Any, tuple[Any, ...]]] = []

    class Loop:  # only what _Deadlines asks of a loop
        def call_later(self, delay: float, callback: Any, *args: Any) -> None:
            scheduled.append((delay, callback, args))

    loop = asyncio.new_event_loop()
    try:
        deadlines = _Deadlines(Loop())  # type: ignore[arg-type]  # the double above
        base = (int(time.monotonic() / _Deadlines.GRAIN) + 100) * _Deadlines.GRAIN  # a slot boundary, 1 s ahead
        futures = [loop.create_future() for _ in range(100)]
        for i, future in enumerate(futures):
            deadlines.add(base + 0.001 + i * 0.00005, future)  # all inside (base, base + 0.01]
        later = loop.create_future()
        deadlines.add(base + 0.495, later)
        assert len(scheduled) == 2
        first_slot = round(base / _Deadlines.GRAIN) + 1  # fires at the slot's end: never before a deadline
        assert sorted(deadlines.slots) == [first_slot, first_slot + 49]
        delay, fire, args = scheduled[0]
        assert args == (first_slot,) and abs(delay - (base + 0.01 - time.monotonic())) < 0.5
        futures[0].set_result(None)  # woken by its batch first
        fire(*args)
        assert all(f.done() for f in futures) and not later.done() and len(deadlines.slots) == 1
    finally:
        loop.close()


def test_settlements_answer_readers_on_any_thread() -> None:
    """The sequencer's settlements: a blocking reader is woken by the set; a reader that times out is told."""
    import threading

    from scitt_oci.log.sequencer import Settlement

    settled: Settlement[int] = Settlement()
    with pytest.raises(TimeoutError):
        settled.result(0.01)
    got: list[int] = []
    reader = threading.Thread(target=lambda: got.append(settled.result(10)))
    reader.start()
    settled.set_result(7)
    reader.join(10)
    assert got == [7] and settled.done() and settled.exception() is None
    with pytest.raises(RuntimeError, match="set once"):
        settled.set_result(8)
    failed: Settlement[int] = Settlement()
    failed.set_exception(OSError("disk"))
    assert isinstance(failed.exception(0), OSError)
    with pytest.raises(OSError, match="disk"):
        failed.result(0)
