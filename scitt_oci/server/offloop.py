"""Database reads and writes for the event loop's handlers: each runs on a small thread pool of its own,
with a deadline. A database that stalls (a network partition, a proxy holding the connection open, a
server out of memory) costs the requests that use it a 503 at the deadline; it never holds the event
loop, and with it /healthz, registrations and every request that needs no database.

The pools are fixed: a call abandoned at its deadline keeps its thread (a thread blocked on a socket
cannot be stopped) until the database answers or the connection fails, and calls behind it wait in
the pool's queue, within their own deadlines. So a stall holds at most READERS + WRITERS threads and
database connections (one a thread), however many requests arrive meanwhile."""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from scitt_oci.errors import StoreUnavailable

T = TypeVar("T")

DEADLINE = 10.0  # seconds a read or write may take before its request is answered 503
READERS = 8  # threads (and so database connections) for reads
WRITERS = 8  # and for writes (webhooks storing events): a stalled read never holds a write up, nor the reverse
BACKLOG = 1024  # calls that may wait for a pool's threads; past it a request is answered 503 at once


class _Pool:
    """`size` daemon threads running calls in order (daemons: a thread blocked on a stalled database must
    not hold the process up when it exits, as a ThreadPoolExecutor's threads would)."""

    def __init__(self, kind: str, size: int) -> None:
        self._calls: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]] = queue.SimpleQueue()
        for i in range(size):
            threading.Thread(target=self._work, name=f"scitt-oci-db-{kind}-{i}", daemon=True).start()

    def submit(self, fn: Callable[[], T]) -> Future[T]:
        if self._calls.qsize() >= BACKLOG:  # the threads are stuck: calls dropped at their deadline pile up
            raise StoreUnavailable(f"the database is not keeping up ({BACKLOG} calls wait for it)")
        future: Future[T] = Future()
        self._calls.put((fn, future))
        return future

    def _work(self) -> None:
        while True:
            fn, future = self._calls.get()
            if not future.set_running_or_notify_cancel():
                continue  # its caller's deadline passed while it waited
            try:
                future.set_result(fn())
            except BaseException as exc:  # handed to the caller, who raises it
                future.set_exception(exc)


_pools: dict[str, _Pool] = {}
_made = threading.Lock()


def _pool(kind: str, size: int) -> _Pool:
    pool = _pools.get(kind)
    if pool is None:
        with _made:
            pool = _pools.get(kind) or _Pool(kind, size)
            _pools[kind] = pool
    return pool


async def _run(fn: Callable[[], T], what: str, deadline: float | None, pool: _Pool) -> T:
    seconds = DEADLINE if deadline is None else deadline
    try:
        # At the deadline the wait is cancelled: a call still queued is dropped, one running is left to end.
        return await asyncio.wait_for(asyncio.wrap_future(pool.submit(fn)), seconds)
    except TimeoutError:
        raise StoreUnavailable(f"{what} did not answer within {seconds:g} s") from None


async def read(fn: Callable[[], T], *, what: str = "the database", deadline: float | None = None) -> T:
    """`fn()` on a reader thread; `StoreUnavailable` if it has not answered within `deadline` seconds."""
    return await _run(fn, what, deadline, _pool("read", READERS))


async def write(fn: Callable[[], T], *, what: str = "the database", deadline: float | None = None) -> T:
    """`read` for an idempotent write: one abandoned at its deadline may still land later, so the caller
    answers 503 and the sender's retry must be recognised as the same (a webhook's redelivery is)."""
    return await _run(fn, what, deadline, _pool("write", WRITERS))
