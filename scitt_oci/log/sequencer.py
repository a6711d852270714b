"""The sequencer: one thread that turns accepted registrations into batches, one signature per batch.

Each loop takes what arrived (waiting up to `max_delay` for more once something is there), and in
one store transaction integrates up to `max_batch` entries (the durable backlog first, then new
arrivals) and stores the overflow as pending. A registration is *accepted* when that transaction
commits, whichever way it went, and *integrated* once its batch's tree head is stored.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

from scitt_oci.errors import Overloaded as Overloaded  # defined there since #12; kept importable here
from scitt_oci.log.store import BatchResult, HeadSigner, LogStore, Pending, StoredHead

log = logging.getLogger(__name__)

T = TypeVar("T")

# With max_delay above this, new entries are made durable (pending) within this long, then integrated
# when their batch is due; at or below it, they are integrated straight away, in one commit.
ACCEPT_WINDOW = 0.005


_EVENTS = threading.Lock()  # creates a settlement's event for its first blocking reader


class Settlement(Generic[T]):
    """A value or an error set once by the sequencer thread, read by any thread: what a registration's
    caller waits for. `concurrent.futures.Future` does the same with a condition variable made for every
    future; this makes an event only for a reader that blocks (the event-loop waiters never do), which
    matters at thousands of registrations a second. Reads of the fields need no lock: each is one
    attribute store, and the setter stores the outcome before it looks for a reader's event."""

    __slots__ = ("_done", "_error", "_event", "_value")

    def __init__(self) -> None:
        self._done = False
        self._value: T | None = None
        self._error: BaseException | None = None
        self._event: threading.Event | None = None

    def done(self) -> bool:
        return self._done

    def set_result(self, value: T) -> None:
        self._settle(value, None)

    def set_exception(self, error: BaseException) -> None:
        self._settle(None, error)

    def _settle(self, value: T | None, error: BaseException | None) -> None:
        if self._done:
            raise RuntimeError("a settlement is set once")
        self._value, self._error = value, error
        self._done = True
        event = self._event
        if event is not None:
            event.set()

    def _wait(self, timeout: float | None) -> None:
        if self._done:
            return
        with _EVENTS:
            if self._event is None:
                self._event = threading.Event()
            event = self._event
        if not self._done and not event.wait(timeout):
            raise TimeoutError(f"not settled within {timeout} s")

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """The error it was settled with (None for a value); `TimeoutError` when not settled in time."""
        self._wait(timeout)
        return self._error

    def result(self, timeout: float | None = None) -> T:
        """The value it was settled with; raises the error it was settled with, or `TimeoutError`."""
        self._wait(timeout)
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]  # settled with a value: T


class Registration:
    """One entry on its way into the log: *accepted* once durable, *integrated* once its batch's head is stored."""

    __slots__ = ("accepted", "integrated", "pending", "waiters")

    def __init__(self, pending: Pending) -> None:
        self.pending = pending
        self.accepted: Settlement[None] = Settlement()
        # the leaf index, and the head of the batch that appended it (None: it was in the log already)
        self.integrated: Settlement[tuple[int, StoredHead | None]] = Settlement()
        # Who else waits for this registration (its service's event-loop waiters): read by `settled` below.
        self.waiters: list[object] = []


BatchObserver = Callable[[BatchResult, float], None]  # (result, seconds the commit took)
# Called on the sequencer thread once per commit (or failed commit) with every registration whose
# settlements it set or advanced: one hand-over per batch, not one per registration.
SettledHook = Callable[[list[Registration]], None]


class Sequencer:
    def __init__(
        self,
        store: LogStore,
        sign: HeadSigner,
        *,
        max_batch: int = 1000,
        max_delay: float = 0.005,
        max_queue: int = 50_000,
        observer: BatchObserver | None = None,
        settled: SettledHook | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._sign = sign
        self._max_batch = max_batch
        self._max_delay = max_delay
        self._max_queue = max_queue
        self._observer = observer
        self._settled = settled
        self._clock = clock
        self._arrivals: queue.SimpleQueue[Registration] = queue.SimpleQueue()
        self._inflight: dict[bytes, Registration] = {}
        self._lock = threading.Lock()
        self._backlog: deque[Registration] = deque()
        self._backlog_since = 0.0  # when the oldest backlog entry was accepted (monotonic)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ----- lifecycle -----
    def start(self) -> None:
        for p in self._store.pending(10_000_000):  # accepted before a restart: integrate them first
            reg = Registration(p)
            reg.accepted.set_result(None)
            self._inflight[p.entry_id] = reg
            self._backlog.append(reg)
        self._thread = threading.Thread(target=self._run, name="scitt-oci-sequencer", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def queued(self) -> int:
        return len(self._inflight)

    def in_flight(self, eid: bytes) -> bool:
        return eid in self._inflight

    # ----- submission -----
    def submit(self, pending: Pending) -> Registration:
        """Queue `pending`; the same entry already in flight returns the same registration."""
        with self._lock:
            existing = self._inflight.get(pending.entry_id)
            if existing is not None:
                return existing
            if len(self._inflight) >= self._max_queue:
                raise Overloaded(f"{len(self._inflight)} registrations are already waiting")
            reg = Registration(pending)
            self._inflight[pending.entry_id] = reg
        self._arrivals.put(reg)
        return reg

    # ----- the loop -----
    def _collect(self, wait: float, until: float) -> list[Registration]:
        """Arrivals: block up to `wait` for the first, then take what arrived by `until` (up to a full batch).

        The loop sleeps through the window and then drains the queue: waking for each arrival would cost
        a thread switch (and the GIL) per registration."""
        arrivals: list[Registration] = []
        try:
            arrivals.append(self._arrivals.get(timeout=wait) if wait > 0 else self._arrivals.get_nowait())
        except queue.Empty:
            return arrivals
        room = self._max_batch - len(self._backlog)
        remaining = until - time.monotonic()
        if remaining > 0 and self._arrivals.qsize() < room - 1:
            time.sleep(remaining)
        get = self._arrivals.get_nowait
        try:
            while len(arrivals) < room:
                arrivals.append(get())
        except queue.Empty:
            pass
        return arrivals

    def _run(self) -> None:
        retry_delay = 0.05
        while not self._stop.is_set() or not self._arrivals.empty():
            now = time.monotonic()
            if self._backlog:
                due_at = self._backlog_since + self._max_delay
                arrivals = self._collect(max(0.0, min(due_at - now, 0.05)), now)
            else:
                # Linger a little for company; a long max_delay makes new entries durable (pending) first.
                arrivals = self._collect(0.05, now + min(self._max_delay, ACCEPT_WINDOW))
            if not arrivals and not self._backlog:
                continue
            now = time.monotonic()
            full = len(self._backlog) + len(arrivals) >= self._max_batch
            if self._backlog:
                due = full or now >= self._backlog_since + self._max_delay
            else:
                due = full or self._max_delay <= ACCEPT_WINDOW
            try:
                self._commit(arrivals, due, now)
            except Exception as exc:  # the store failed: nothing new was accepted
                log.error("log commit failed (%s): %s", type(exc).__name__, exc)
                self._forget(arrivals)
                for reg in arrivals:
                    reg.accepted.set_exception(exc)
                    reg.integrated.set_exception(exc)
                self._notify(arrivals)
                self._stop.wait(retry_delay)
                retry_delay = min(retry_delay * 2, 5.0)
                continue
            retry_delay = 0.05

    def _commit(self, arrivals: list[Registration], due: bool, now: float) -> None:
        take = min(len(self._backlog), self._max_batch) if due else 0
        from_backlog = [self._backlog[i] for i in range(take)]
        room = self._max_batch - take if due else 0
        integrate = from_backlog + arrivals[:room]
        overflow = arrivals[room:]
        started = time.monotonic()
        result = self._store.commit(
            accept=[r.pending for r in overflow],
            integrate=[r.pending for r in integrate],
            sign=self._sign,
            now=self._clock(),
        )
        for _ in range(take):
            self._backlog.popleft()
        self._forget(integrate)
        indexes = result.integrated
        head_of = result.head_of
        for reg in integrate:
            if not reg.accepted.done():
                reg.accepted.set_result(None)
            index = indexes[reg.pending.entry_id]
            reg.integrated.set_result((index, head_of(index)))
        if overflow:
            if not self._backlog:
                self._backlog_since = now
            for reg in overflow:
                reg.pending = Pending(reg.pending.entry_id, reg.pending.entry, stored=True)
                reg.accepted.set_result(None)
                self._backlog.append(reg)
        elif not self._backlog:
            self._backlog_since = now
        self._notify(integrate + overflow if overflow else integrate)
        if self._observer is not None and integrate:
            self._observer(result, time.monotonic() - started)

    def _notify(self, settled: list[Registration]) -> None:
        if self._settled is not None and settled:
            try:
                self._settled(settled)
            except Exception:  # the settlements are set: a waiter that is not woken still times out
                log.exception("delivering a batch's outcomes failed")

    def _forget(self, regs: list[Registration]) -> None:
        """No longer in flight: one lock for the whole batch."""
        inflight = self._inflight
        with self._lock:
            for reg in regs:
                eid = reg.pending.entry_id
                if inflight.get(eid) is reg:
                    del inflight[eid]
