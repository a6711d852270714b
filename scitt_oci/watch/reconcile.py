"""Finding what webhooks missed: walk the catalog and the tags, queue what is not on record yet.

Used by the periodic reconciliation loop of `serve` and by `scitt-oci backfill`.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterator

from scitt_oci.oci.client import RegistryClient
from scitt_oci.watch.events import PUSH, RegistryEvent
from scitt_oci.watch.inbox import Inbox

log = logging.getLogger(__name__)
_FALLBACK_TAG = re.compile(r"^sha(256|512)-[0-9a-f]{64,128}$")


def unrecorded(
    inbox: Inbox, name: str, client: RegistryClient, repositories: list[str] | None = None
) -> Iterator[RegistryEvent]:
    """Push events for every tagged manifest of `repositories` (default: the catalog) not yet on record."""
    for repo in repositories if repositories is not None else client.catalog():
        for tag in client.tags(repo):
            if _FALLBACK_TAG.match(tag):
                continue  # a referrers index (ours or another tool's), never an image
            found = client.head_manifest(repo, tag)
            if found is not None and not inbox.is_recorded(name, repo, found.digest):
                yield RegistryEvent(repo, found.digest, tag, PUSH, found.media_type or None)


class Reconciler:
    def __init__(
        self,
        inbox: Inbox,
        clients: dict[str, RegistryClient],
        interval: float,
        on_error: Callable[[Exception], None] | None = None,
    ) -> None:
        self.inbox = inbox
        self.clients = clients
        self.interval = interval
        self.on_error = on_error
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> int:
        queued = 0
        for name, client in self.clients.items():
            try:
                queued += self.inbox.add(name, list(unrecorded(self.inbox, name, client)))
            except Exception as exc:  # a registry that is down is tried again next round
                log.warning("reconciling %s failed: %s", name, exc)
                if self.on_error:
                    self.on_error(exc)
        return queued

    def start(self) -> None:
        if self.interval <= 0:
            return
        self._thread = threading.Thread(target=self._run, name="scitt-oci-reconcile", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.run_once()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(5)
