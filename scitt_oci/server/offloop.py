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

DEADLINE = 10.0  # seconds a read may take before its request is answered 503
READERS = 8  # threads per event loop that may wait on the database at once (others queue, in the deadline)

_limiters: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, anyio.CapacityLimiter] = weakref.WeakKeyDictionary()


def _limiter() -> anyio.CapacityLimiter:
    """This loop's pool: a stalled database ties up these threads only, not the pool webhooks write with."""
    loop = asyncio.get_running_loop()
    limiter = _limiters.get(loop)
    if limiter is None:
        limiter = _limiters[loop] = anyio.CapacityLimiter(READERS)
    return limiter


async def read(fn: Callable[[], T], *, what: str = "the database", deadline: float | None = None) -> T:
    """`fn()` in a reader thread; `StoreUnavailable` if it has not answered within `deadline` seconds (the
    thread is left to finish or fail on its own: a thread blocked on a socket cannot be stopped)."""
    seconds = DEADLINE if deadline is None else deadline
    try:
        with anyio.fail_after(seconds):
            return await anyio.to_thread.run_sync(fn, abandon_on_cancel=True, limiter=_limiter())
    except TimeoutError:
        raise StoreUnavailable(f"{what} did not answer within {seconds:g} s") from None
