"""Database reads for the event loop's handlers: each runs in a thread of a small pool of its own, with a
deadline. A database that stalls (a network partition, a proxy holding the connection open, a server
out of memory) costs the requests that read it a 503 after the deadline; it never holds the event
loop, and with it /healthz, registrations and every request that needs no database."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from typing import TypeVar

import anyio
import anyio.to_thread

from scitt_oci.errors import StoreUnavailable

T = TypeVar("T")

DEADLINE = 10.0  # seconds a read or write may take before its request is answered 503
READERS = 8  # threads per event loop that may wait on the database at once for reads (others queue)
WRITERS = 8  # and for writes (webhooks storing events): a stalled read never holds a write up, nor the reverse

_limiters: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, anyio.CapacityLimiter]] = (
    weakref.WeakKeyDictionary()
)


def _limiter(kind: str, size: int) -> anyio.CapacityLimiter:
    """This loop's pool for `kind`: a stalled database ties up these threads only, not Starlette's own."""
    pools = _limiters.setdefault(asyncio.get_running_loop(), {})
    limiter = pools.get(kind)
    if limiter is None:
        limiter = pools[kind] = anyio.CapacityLimiter(size)
    return limiter


async def _run(fn: Callable[[], T], what: str, deadline: float | None, limiter: anyio.CapacityLimiter) -> T:
    seconds = DEADLINE if deadline is None else deadline
    try:
        with anyio.fail_after(seconds):
            return await anyio.to_thread.run_sync(fn, abandon_on_cancel=True, limiter=limiter)
    except TimeoutError:
        raise StoreUnavailable(f"{what} did not answer within {seconds:g} s") from None


async def read(fn: Callable[[], T], *, what: str = "the database", deadline: float | None = None) -> T:
    """`fn()` in a reader thread; `StoreUnavailable` if it has not answered within `deadline` seconds (the
    thread is left to finish or fail on its own: a thread blocked on a socket cannot be stopped)."""
    return await _run(fn, what, deadline, _limiter("read", READERS))


async def write(fn: Callable[[], T], *, what: str = "the database", deadline: float | None = None) -> T:
    """`read` for an idempotent write: one abandoned at its deadline may still land later, so the caller
    answers 503 and the sender's retry must be recognised as the same (a webhook's redelivery is)."""
    return await _run(fn, what, deadline, _limiter("write", WRITERS))
