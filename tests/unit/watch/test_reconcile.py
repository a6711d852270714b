"""Reconciliation in one process: the catalog walk queues what webhooks missed, and re-listing puts back
what a concurrent writer dropped from a tag-schema referrers index."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from pathlib import Path

import pytest

from scitt_oci.errors import TransientRegistryError
from scitt_oci.oci import manifest as mf
from scitt_oci.watch.events import DELETE, PUSH, RegistryEvent
from scitt_oci.watch.reconcile import Reconciler, Unrepaired, dead_deletions, reattach, unrecorded
from tests.memregistry import push_image, push_referrer
from tests.unit.watch.world import REGISTRY, world


def test_the_walk_queues_tagged_manifests_not_on_record(tmp_path: Path) -> None:
    with world(tmp_path, referrers_api=False) as w:
        recorded = push_image(w.registry, "app", "v1", seed="1")
        w.push("app", recorded.digest, "v1")
        w.drain()  # on record, and its fallback index tag is in the registry now
        fresh = push_image(w.registry, "app", "v2", seed="2")
        other = push_image(w.registry, "lib/base", "latest", seed="3")
        push_image(w.registry, "app", "bad tag", seed="4")  # never a registry path
        push_image(w.registry, "Not/A/Repo", "v1", seed="5")  # never a repository name
        found = sorted(unrecorded(w.inbox, REGISTRY, w.registry), key=lambda e: e.repository)
        assert found == [
            RegistryEvent("app", fresh.digest, "v2", PUSH, mf.OCI_MANIFEST),
            RegistryEvent("lib/base", other.digest, "latest", PUSH, mf.OCI_MANIFEST),
        ]
        assert list(unrecorded(w.inbox, REGISTRY, w.registry, ["lib/base"])) == found[1:]


def test_run_once_queues_them_and_a_failing_registry_is_reported(tmp_path: Path) -> None:
    with world(tmp_path) as w:
        image = push_image(w.registry, "app", "v1")
        errors: list[Exception] = []
        reconciler = Reconciler(w.inbox, {REGISTRY: w.registry}, 0, errors.append)
        w.registry.fail_next(1)
        assert reconciler.run_once() == 0 and len(errors) == 1
        assert reconciler.run_once() == 1 and reconciler.run_once() == 0  # queued once
        w.drain()
        assert w.inbox.is_recorded(REGISTRY, "app", image.digest)
        assert reconciler.run_once() == 0
        with w.inbox.exclusive(REGISTRY) as mine:  # another walker holds the registry: this one passes
            assert mine
            push_image(w.registry, "app", "v2", seed="2")
            assert reconciler.run_once() == 0 and reconciler.reattach_once() == 0
        assert reconciler.run_once() == 1


def test_dropped_entries_are_listed_again(tmp_path: Path) -> None:
    with world(tmp_path, referrers_api=False) as w:
        image = push_image(w.registry, "app", "v1")
        sig = push_referrer(w.registry, "app", image, mf.NOTATION_SIGNATURE, b"x", "application/jose+json")
        w.push("app", image.digest, "v1")
        w.push("app", sig.digest, None)
        w.drain()
        listed = {d.digest for d in w.registry.referrers("app", image.digest)}
        assert len(listed) == 3  # the signature and two statements
        # A concurrent writer rewrote the index from an old read: only the signature is left.
        w.registry.delete_manifest("app", mf.fallback_tag(image.digest))
        w.registry.write_index("app", image.digest, [sig])
        assert reattach(w.inbox, REGISTRY, w.registry, settle=3600) == 0  # too recent: left to its writer
        assert reattach(w.inbox, REGISTRY, w.registry, settle=-1) == 2
        assert {d.digest for d in w.registry.referrers("app", image.digest)} == listed
        assert reattach(w.inbox, REGISTRY, w.registry, settle=-1) == 0  # confirmed: not checked again
        w.registry.delete_manifest("app", mf.fallback_tag(image.digest))
        assert reattach(w.inbox, REGISTRY, w.registry, settle=-1, everything=True) == 3


def test_a_dropped_attestation_referrer_is_listed_again(tmp_path: Path) -> None:
    """A Sigstore bundle holding an in-toto statement is recorded as an attestation, and is a referrer
    of the image as a signature is: a concurrent writer's drop of it is healed the same way."""
    with world(tmp_path, referrers_api=False) as w:
        image = push_image(w.registry, "app", "v1")
        att = push_referrer(w.registry, "app", image, mf.NOTATION_SIGNATURE, b"x", "application/jose+json")
        w.push("app", image.digest, "v1")
        w.push("app", att.digest, None)
        w.drain()
        # As the worker records a referrer whose statement is an attestation.
        conn = sqlite3.connect(w.inbox.path)
        with contextlib.closing(conn), conn:
            assert conn.execute("UPDATE recorded SET kind = 'attestation' WHERE kind = 'signature'").rowcount == 1
        listed = {d.digest for d in w.registry.referrers("app", image.digest)}
        w.registry.delete_manifest("app", mf.fallback_tag(image.digest))
        w.registry.write_index("app", image.digest, [])
        assert reattach(w.inbox, REGISTRY, w.registry, settle=-1) == 3
        assert {d.digest for d in w.registry.referrers("app", image.digest)} == listed


@pytest.mark.parametrize("api", [True, False], ids=["referrers-api", "fallback-tag"])
def test_nothing_to_relist_when_all_is_listed(tmp_path: Path, api: bool) -> None:
    with world(tmp_path, referrers_api=api) as w:
        image = push_image(w.registry, "app", "v1")
        w.push("app", image.digest, "v1")
        w.drain()
        reconciler = Reconciler(w.inbox, {REGISTRY: w.registry}, 0, settle=-1)
        assert reconciler.reattach_once() == 0
        assert w.inbox.attachments(REGISTRY, before=1e12) == []  # all confirmed


def test_a_failing_reattach_is_reported(tmp_path: Path) -> None:
    with world(tmp_path) as w:
        image = push_image(w.registry, "app", "v1")
        w.push("app", image.digest, "v1")
        w.drain()
        errors: list[Exception] = []
        reconciler = Reconciler(w.inbox, {REGISTRY: w.registry}, 0, errors.append, settle=-1)
        w.registry.fail_next(1)
        assert reconciler.reattach_once() == 0 and len(errors) == 1
        assert len(w.inbox.attachments(REGISTRY, before=1e12)) == 1  # unconfirmed: checked next round


def test_the_loop_polls_and_reattaches_until_stopped(tmp_path: Path) -> None:
    with world(tmp_path) as w:
        image = push_image(w.registry, "app", "v1")
        queued, checked = threading.Event(), threading.Event()
        reconciler = Reconciler(w.inbox, {REGISTRY: w.registry}, 0.01, reattach_interval=0.01, settle=-1)
        real_add, real_referrers = w.inbox.add, w.registry.referrers

        def add(registry: str, events: list[RegistryEvent], *, revive: bool = False) -> int:
            n = real_add(registry, events, revive=revive)
            if n:
                queued.set()
            return n

        def referrers(repo: str, digest: str, artifact_type: str | None = None) -> list[mf.Descriptor]:
            checked.set()
            return real_referrers(repo, digest, artifact_type)

        w.inbox.add = add  # type: ignore[method-assign]  # the real method, observed
        w.registry.referrers = referrers  # type: ignore[method-assign]  # the real method, observed
        reconciler.start()
        assert queued.wait(30)
        w.drain()  # what the loop queued is recorded; a later re-listing round checks its attachment
        assert w.inbox.is_recorded(REGISTRY, "app", image.digest)
        assert checked.wait(30)
        reconciler.stop()
        assert reconciler._thread is not None and not reconciler._thread.is_alive()


def test_a_loop_with_nothing_to_do_starts_no_thread(tmp_path: Path) -> None:
    with world(tmp_path) as w:
        reconciler = Reconciler(w.inbox, {REGISTRY: w.registry}, 0)
        reconciler.start()
        reconciler.stop()
        assert reconciler._thread is None


def test_an_index_tag_taken_over_is_reported_and_the_rest_still_repaired(tmp_path: Path) -> None:
    """Anyone who can push may put an image manifest on an image's fallback index tag: that image cannot be
    repaired, but the walk goes on to the others, names it with the reason, and checks it again next time."""
    with world(tmp_path, referrers_api=False) as w:
        taken, dropped = push_image(w.registry, "app", "v1", seed="1"), push_image(w.registry, "app", "v2", seed="2")
        w.push("app", taken.digest, "v1")
        w.push("app", dropped.digest, "v2")
        w.drain()
        push_image(w.registry, "app", mf.fallback_tag(taken.digest), seed="junk")  # an image, on the index tag
        w.registry.delete_manifest("app", mf.fallback_tag(dropped.digest))
        failed: list[Unrepaired] = []
        assert reattach(w.inbox, REGISTRY, w.registry, settle=-1, failed=failed) == 1
        assert len(w.registry.referrers("app", dropped.digest)) == 1  # its statement is listed again
        assert [f.image for f in failed] == [f"{REGISTRY}/app@{taken.digest}"]
        assert "not a referrers index" in failed[0].why
        again: list[Unrepaired] = []  # the one repaired is confirmed; the one that failed is checked again
        assert reattach(w.inbox, REGISTRY, w.registry, settle=-1, failed=again) == 0
        assert again == failed
        errors: list[Exception] = []
        reconciler = Reconciler(w.inbox, {REGISTRY: w.registry}, 0, errors.append, settle=-1)
        assert reconciler.reattach_once() == 0 and not errors  # logged, not a failure of the whole walk


def test_a_walk_with_failed_names_what_it_cannot_read_and_goes_on(tmp_path: Path) -> None:
    with world(tmp_path, referrers_api=False) as w:
        image = push_image(w.registry, "app", "v1")
        w.registry.fail_next(1, 404)
        failed: list[Unrepaired] = []
        found = list(unrecorded(w.inbox, REGISTRY, w.registry, ["lib", "app"], failed))
        assert [e.digest for e in found] == [image.digest]
        assert [f.image for f in failed] == [f"{REGISTRY}/lib"] and "tags cannot be listed" in failed[0].why
        w.registry.fail_next(1, 503)  # a registry that does not answer stops the walk
        with pytest.raises(TransientRegistryError):
            list(unrecorded(w.inbox, REGISTRY, w.registry, ["app"], failed))


def test_dead_lettered_deletions_are_counted_per_registry_for_backfill_to_name(tmp_path: Path) -> None:
    """A catalog walk cannot find a deletion's manifest: backfill counts the dead-lettered ones instead."""
    with world(tmp_path) as w:
        digest = push_image(w.registry, "app", "v1").digest
        w.inbox.add(REGISTRY, [RegistryEvent("app", digest, None, DELETE), RegistryEvent("app", digest, "v1", PUSH)])
        w.inbox.add("other.test", [RegistryEvent("app", digest, None, DELETE)])
        for item in w.inbox.claim(3):
            w.inbox.failed(item, "failed for good", permanent=True)
        assert len(w.inbox.dead()) == 3
        assert dead_deletions(w.inbox, REGISTRY) == 1 and dead_deletions(w.inbox, "other.test") == 1
        w.inbox.retry_dead()
        assert dead_deletions(w.inbox, REGISTRY) == 0
