"""Finding what webhooks missed: walk the catalog and the tags, queue what is not on record yet; and
checking that what is on record is still attached: re-list a statement (or a signature it is about)
that a concurrent writer dropped from a tag-schema referrers index.

Used by the periodic reconciliation loop of `serve` and by `scitt-oci backfill`. Replicas sharing one
PostgreSQL inbox take turns: each walk holds the inbox's per-registry lock (`Inbox.exclusive`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from scitt_oci.errors import ScittOciError, TransientRegistryError
from scitt_oci.oci.attached import resolve_tag
from scitt_oci.oci.manifest import Descriptor, is_fallback_tag
from scitt_oci.oci.reference import valid_repository, valid_tag
from scitt_oci.oci.registry import Registry
from scitt_oci.scitt.profile import SIGNED_KINDS
from scitt_oci.watch.events import DELETE, PUSH, RegistryEvent
from scitt_oci.watch.inbox import Attachment, Inbox

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class Unrepaired:
    """An image whose attachments could not be checked or listed again, and why (its fallback index
    tag taken over by another manifest, say): reported, never a reason to stop the walk."""

    image: str  # registry/repository@digest
    why: str


def unrecorded(
    inbox: Inbox,
    name: str,
    client: Registry,
    repositories: list[str] | None = None,
    failed: list[Unrepaired] | None = None,
) -> Iterator[RegistryEvent]:
    """Push events for every tagged manifest of `repositories` (default: the catalog) not yet on record.
    With `failed`, a repository whose tags, or a tag whose manifest, cannot be read is added to it and
    the walk goes on (a registry that does not answer still stops it); without, the error is raised."""
    for repo in repositories if repositories is not None else client.catalog():
        if not valid_repository(repo):
            log.warning("%s: skipping the repository %s, not a repository name", name, ascii(repo[:100]))
            continue
        tags = _or_failed(failed, f"{name}/{repo}", "its tags cannot be listed", client.tags, repo)
        for tag in tags or []:
            if is_fallback_tag(tag):
                continue  # a referrers index (ours or another tool's), never an image
            if not valid_tag(tag):  # a tag is a path segment: `../` or `?` would lead elsewhere
                log.warning("%s/%s: skipping the tag %s, not a tag", name, repo, ascii(tag[:100]))
                continue
            found = _or_failed(
                failed, f"{name}/{repo}:{tag}", "its manifest cannot be read", resolve_tag, client, repo, tag
            )
            if found is not None and not inbox.is_recorded(name, repo, found.digest):
                yield RegistryEvent(repo, found.digest, tag, PUSH, found.media_type or None)


def not_recorded(inbox: Inbox, name: str, events: list[RegistryEvent]) -> list[Unrepaired]:
    """Those of `events` (pushes) whose manifest is not on record, each with its dead letter's reason."""
    missing = [e for e in events if e.digest and not inbox.is_recorded(name, e.repository, e.digest)]
    if not missing:
        return []
    reasons = {
        (d.event.repository, d.event.digest): d.reason for d in inbox.dead(len(events) + 1000) if d.registry == name
    }
    return [
        Unrepaired(
            f"{name}/{e.repository}@{e.digest}",
            f"not recorded: {reasons.get((e.repository, e.digest), 'its event did not complete')}"
            " (`scitt-oci watch dead-letters --retry` queues it again)",
        )
        for e in missing
    ]


def dead_deletions(inbox: Inbox, name: str) -> int:
    """How many deletion events of registry `name` are dead-lettered: a catalog walk cannot find what
    they were about (the manifests are gone), so backfill names them for `watch dead-letters`."""
    return sum(1 for d in inbox.dead(100_000) if d.registry == name and d.event.action == DELETE)


def _or_failed(failed: list[Unrepaired] | None, what: str, why: str, fn: Callable[..., T], *args: Any) -> T | None:
    """`fn(*args)`; when it fails for this item only (not a registry that does not answer) and `failed`
    is given: None, with `what` and why added to `failed`."""
    try:
        return fn(*args)
    except TransientRegistryError:
        raise
    except ScittOciError as exc:
        if failed is None:
            raise
        failed.append(Unrepaired(what, f"{why}: {exc}"))
        return None


def reattach(
    inbox: Inbox,
    name: str,
    client: Registry,
    *,
    settle: float = 30.0,
    everything: bool = False,
    failed: list[Unrepaired] | None = None,
) -> int:
    """Compare what is on record with what the registry lists as attached, and list again what is
    missing: our statement referrers, and the signatures they are about when those are referrers of
    the same image. Attachments recorded less than `settle` seconds ago are left to their writer; the
    rest are checked once (`everything`: all of them again). Returns how many entries were re-listed.

    An image that cannot be repaired (its listing or index is not one we can read or write) is logged,
    added to `failed`, left unconfirmed (checked again next time) and the walk goes on; a registry that
    does not answer (TransientRegistryError) stops it, as every other image would fail alike."""
    by_subject: dict[tuple[str, str], list[Attachment]] = {}
    for a in inbox.attachments(name, before=time.time() - settle, everything=everything):
        by_subject.setdefault((a.repository, a.subject), []).append(a)
    relisted = 0
    for (repo, subject), items in by_subject.items():
        try:
            relisted += _relist(name, client, repo, subject, items)
        except TransientRegistryError:
            raise
        except ScittOciError as exc:
            log.warning("%s/%s@%s: its referrers cannot be checked or listed again: %s", name, repo, subject, exc)
            if failed is not None:
                failed.append(Unrepaired(f"{name}/{repo}@{subject}", str(exc)))
            continue
        inbox.confirm(name, items)
    return relisted


# A signed artifact's own manifest is a referrer of the image too (a Sigstore bundle may be either kind).
_SIGNED = frozenset(k.value for k in SIGNED_KINDS)


def _relist(name: str, client: Registry, repo: str, subject: str, items: list[Attachment]) -> int:
    """List again what of `items` the listing of `repo@subject` lacks; how many entries were."""
    listed = {d.digest for d in client.referrers(repo, subject)}
    missing: list[Descriptor] = []
    if client.referrers_api is not True:  # a registry with the referrers API lists what exists by itself
        candidates = {a.referrer for a in items} | {a.recorded for a in items if a.kind in _SIGNED}
        for digest in sorted(candidates - listed):
            entry = client.referrer_entry(repo, digest, subject)
            if entry is not None:  # None: deleted since, or a cosign .sig (a tag, not a referrer)
                missing.append(entry)
    if missing:
        log.warning(
            "%s/%s@%s: %d referrers were missing from its index; listing them again", name, repo, subject, len(missing)
        )
        client.list_referrers(repo, subject, missing)
    return len(missing)


class Reconciler:
    """The periodic loop: polling for what webhooks missed (`interval`, 0 = off) and re-listing
    attachments that concurrent writers dropped (`reattach_interval`, 0 = off)."""

    def __init__(
        self,
        inbox: Inbox,
        clients: Mapping[str, Registry],
        interval: float,
        on_error: Callable[[Exception], None] | None = None,
        *,
        reattach_interval: float = 0.0,
        settle: float = 30.0,
    ) -> None:
        self.inbox = inbox
        self.clients = clients
        self.interval = interval
        self.reattach_interval = reattach_interval
        self.settle = settle
        self.on_error = on_error
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> int:
        """Queue what is not on record yet; returns how many events were queued."""
        queued = 0
        for name, client in self.clients.items():
            try:
                with self.inbox.exclusive(name) as mine:
                    if not mine:
                        continue  # another replica (or a backfill) walks this registry now
                    queued += self.inbox.add(name, list(unrecorded(self.inbox, name, client)))
            except Exception as exc:  # a registry that is down is tried again next round
                log.warning("reconciling %s failed: %s", name, exc)
                if self.on_error:
                    self.on_error(exc)
        return queued

    def reattach_once(self, *, everything: bool = False) -> int:
        """List again what is on record but no longer attached; returns how many entries were re-listed."""
        relisted = 0
        for name, client in self.clients.items():
            try:
                with self.inbox.exclusive(name) as mine:
                    if not mine:
                        continue  # another replica checks this registry now
                    relisted += reattach(self.inbox, name, client, settle=self.settle, everything=everything)
            except Exception as exc:  # tried again next round: unconfirmed attachments stay unconfirmed
                log.warning("reconciling attachments in %s failed: %s", name, exc)
                if self.on_error:
                    self.on_error(exc)
        return relisted

    def start(self) -> None:
        if self.interval <= 0 and self.reattach_interval <= 0:
            return
        self._thread = threading.Thread(target=self._run, name="scitt-oci-reconcile", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        periods = [p for p in (self.interval, self.reattach_interval) if p > 0]
        tick = min(periods)
        next_poll = next_reattach = time.monotonic()
        while not self._stop.wait(tick):
            now = time.monotonic()
            if self.interval > 0 and now >= next_poll + self.interval:
                next_poll = now
                self.run_once()
            if self.reattach_interval > 0 and now >= next_reattach + self.reattach_interval:
                next_reattach = now
                self.reattach_once()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(5)
