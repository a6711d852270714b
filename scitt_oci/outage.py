"""Waiting out our own database: a step that finds it out of reach (a restart, a failover) is run again
after a pause, for as long as the caller's patience lasts. Callers: `backfill`'s steps and admission's
deploy records; the watcher's workers, which wait without end, keep their own loop (worker.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from scitt_oci.errors import StoreUnavailable

T = TypeVar("T")


def wait_out(
    step: Callable[[], T],
    *,
    patience: float,
    pause: float,
    max_pause: float | None = None,
    waiting: Callable[[StoreUnavailable, int], None] | None = None,
) -> T:
    """`step()`, run again while it raises StoreUnavailable: after `pause` seconds, doubling up to
    `max_pause` (default: `pause`, fixed). `waiting(exc, tries)` is told of each failure that is waited
    out. Past `patience` seconds the last error is raised, saying for how long it lasted."""
    started = time.monotonic()
    tries = 0
    while True:
        try:
            return step()
        except StoreUnavailable as exc:
            tries += 1
            if time.monotonic() - started + pause > patience:
                raise type(exc)(f"{exc} for over {patience:g} s") from None
            if waiting is not None:
                waiting(exc, tries)
            time.sleep(pause)  # the pace of the retries, not a synchronisation
            pause = min(pause * 2, max_pause if max_pause is not None else pause)
