"""The watcher's worker in one process: events from a real SQLite inbox, an in-memory registry (with
and without the referrers API), statements registered by a real transparency service."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from scitt_oci.errors import ClientError, InboxUnavailable, StoreUnavailable, TransportError
from scitt_oci.oci import manifest as mf
from scitt_oci.scitt.profile import Kind
from scitt_oci.signatures.trust import CosignKey, SignatureTrust
from scitt_oci.watch.classify import Decision
from scitt_oci.watch.events import DELETE, DEPLOY, PUSH, RegistryEvent
from scitt_oci.watch.inbox import Inbox, InboxItem, PostgresInbox
from scitt_oci.watch.worker import RemoteRegistrar
from tests.memregistry import push_image, push_index, push_referrer
from tests.unit.log.test_postgres_store import DSN, _cut, dropped
from tests.unit.watch.world import REGISTRY, World, cosign_signature, world


@pytest.mark.parametrize("api", [True, False], ids=["referrers-api", "fallback-tag"])
def test_a_push_is_registered_and_attached_once(tmp_path: Path, api: bool) -> None:
    with world(tmp_path, referrers_api=api) as w:
        image = push_image(w.registry, "app", "v1")
        w.push("app", image.digest, "v1", mf.OCI_MANIFEST)
        assert w.drain() == 1
        assert w.inbox.counts() == {"done": 1}
        [event] = w.statements("app", image.digest)
        assert (event.kind, str(event.recorded_digest), event.detail("tag")) == (Kind.PUSH, image.digest, "v1")
        assert w.inbox.is_recorded(REGISTRY, "app", image.digest)
        assert w.inbox.pushed(REGISTRY, "app", image.digest) == (mf.OCI_MANIFEST, image.size)
        assert w.service.store.size() == 1
        # The news of our own referrer (and of the fallback index) is recognised without a read.
        [referrer] = w.registry.referrers("app", image.digest, mf.STATEMENT_ARTIFACT)
        index = w.registry.head_manifest("app", mf.fallback_tag(image.digest))
        assert (index is None) is api
        reads = w.registry.calls["manifest"]
        w.push("app", referrer.digest, None, mf.OCI_MANIFEST)
        if index is not None:
            w.push("app", index.digest, mf.fallback_tag(image.digest), mf.OCI_INDEX)
        assert w.drain() == 2 - api
        assert w.registry.calls["manifest"] == reads
        assert w.inbox.counts() == {"done": 3 - api} and w.service.store.size() == 1


def test_a_push_without_a_tag_of_a_manifest_on_record_is_not_recorded_again(tmp_path: Path) -> None:
    """The same news again (a tag-less webhook) adds no log entry or referrer; a new tag does (the tag now
    names the manifest), and so does a push after the manifest's deletion was recorded."""
    with world(tmp_path) as w:
        image = push_image(w.registry, "app", "v1")
        w.push("app", image.digest, "v1")
        w.drain()
        w.push("app", image.digest, None)
        assert w.drain() == 1 and w.service.store.size() == 1 and len(w.statements("app", image.digest)) == 1
        w.push("app", image.digest, "v2")
        w.drain()
        assert [e.detail("tag") for e in w.statements("app", image.digest)] == ["v1", "v2"]
        w.inbox.add(REGISTRY, [RegistryEvent("app", image.digest, None, DELETE)])
        w.registry.delete_manifest("app", image.digest)
        w.drain()
        assert w.service.store.size() == 3
        push_image(w.registry, "app", "v1")
        w.push("app", image.digest, None)
        w.drain()
        assert w.service.store.size() == 4


def test_a_tag_only_event_is_resolved_and_a_missing_tag_is_dead_at_once(tmp_path: Path) -> None:
    with world(tmp_path) as w:
        image = push_image(w.registry, "app", "v1")
        w.push("app", None, "v1")
        w.push("app", None, "gone")
        w.drain()
        assert w.inbox.counts() == {"done": 1, "dead": 1}
        [dead] = w.inbox.dead()
        assert dead.attempts == 1 and dead.reason == "PermanentError: app:gone does not exist"
        assert [e.kind for e in w.statements("app", image.digest)] == [Kind.PUSH]


def test_unconfigured_registries_and_bad_tags_are_dead_at_once(tmp_path: Path) -> None:
    with world(tmp_path) as w:
        digest = push_image(w.registry, "app").digest
        w.inbox.add("elsewhere.test", [RegistryEvent("app", digest, None, PUSH)])
        w.inbox.add(
            REGISTRY, [RegistryEvent.from_json({**RegistryEvent("app", digest, None, PUSH).to_json(), "tag": "../x"})]
        )
        w.drain()
        reasons = sorted(d.reason for d in w.inbox.dead())
        assert reasons == [
            "PermanentError: registry 'elsewhere.test' is not configured",
            "PermanentError: the tag '../x' is not a tag; never used in a registry path",
        ]
        assert w.service.store.size() == 0


def test_an_index_queues_its_platform_manifests_and_all_are_recorded(tmp_path: Path) -> None:
    with world(tmp_path, referrers_api=False) as w:
        children = [push_image(w.registry, "app", seed=str(n)) for n in range(2)]
        index = push_index(w.registry, "app", children, "v1")
        w.push("app", index.digest, "v1", mf.OCI_INDEX)
        assert w.drain() == 3  # the index, then its two platform manifests
        for d in (index, *children):
            assert [e.kind for e in w.statements("app", d.digest)] == [Kind.PUSH]
        assert w.service.store.size() == 3


def test_a_cosign_signature_is_verified_and_recorded_about_the_image(tmp_path: Path) -> None:
    signer = ec.generate_private_key(ec.SECP256R1())
    trust = SignatureTrust(cosign_keys=(CosignKey("release", signer.public_key()),))
    with world(tmp_path, signature_trust=trust) as w:
        image = push_image(w.registry, "app", "v1")
        sig = cosign_signature(w.registry, "app", image, signer)
        w.push("app", sig, f"sha256-{image.digest[7:]}.sig", mf.OCI_MANIFEST)
        assert w.drain() == 1
        [event] = w.statements("app", image.digest)
        assert (event.kind, str(event.recorded_digest)) == (Kind.SIGNATURE, sig)
        details = dict(event.details)
        assert details["format"] == "cosign" and details["verified"] is True and details["anchor"] == "release"


def test_an_untrusted_referrer_signature_is_recorded_as_not_verified_and_stays_listed(tmp_path: Path) -> None:
    with world(tmp_path, referrers_api=False) as w:
        image = push_image(w.registry, "app", "v1")
        sig = push_referrer(w.registry, "app", image, mf.NOTATION_SIGNATURE, b"not a jws", "application/jose+json")
        # A concurrent writer's index lost the signature's entry: the watcher lists it again beside ours.
        w.registry.delete_manifest("app", mf.fallback_tag(image.digest))
        w.push("app", sig.digest, None, mf.OCI_MANIFEST)
        assert w.drain() == 1
        [event] = w.statements("app", image.digest)
        details = dict(event.details)
        assert event.kind is Kind.SIGNATURE and details["verified"] is False and details["format"] == "notation"
        assert sig.digest in {d.digest for d in w.registry.referrers("app", image.digest)}


def test_other_referrers_and_statement_artifacts_are_skipped(tmp_path: Path) -> None:
    with world(tmp_path) as w:
        image = push_image(w.registry, "app", "v1")
        sbom = push_referrer(w.registry, "app", image, "application/spdx+json", b"{}", "application/spdx+json")
        w.push("app", sbom.digest, None)
        done: list[Decision | None] = []
        w.watcher.on_done = lambda _item, decision, _t: done.append(decision)
        w.drain()
        assert [d.reason if d else None for d in done] == [
            "a referrer of type 'application/spdx+json', not a signature"
        ]
        assert w.service.store.size() == 0 and w.inbox.counts() == {"done": 1}


def test_a_deleted_image_is_recorded_and_attached_to_its_record(tmp_path: Path) -> None:
    with world(tmp_path, referrers_api=False) as w:
        image = push_image(w.registry, "app", "v1")
        never_seen = push_image(w.registry, "app", seed="x")
        w.push("app", image.digest, "v1")
        w.drain()
        for d in (image, never_seen):
            assert w.registry.delete_manifest("app", d.digest)
            w.inbox.add(REGISTRY, [RegistryEvent("app", d.digest, None, DELETE)])
        assert w.drain() == 2
        assert [e.kind for e in w.statements("app", image.digest)] == [Kind.PUSH, Kind.DELETE]
        assert w.statements("app", never_seen.digest) == []  # registered, nothing on record to attach it to
        assert w.service.store.size() == 3 and w.inbox.counts() == {"done": 3}


def test_a_delete_event_for_a_manifest_still_there_is_a_blob_deletion(tmp_path: Path) -> None:
    with world(tmp_path) as w:
        image = push_image(w.registry, "app", "v1")
        w.inbox.add(REGISTRY, [RegistryEvent("app", image.digest, None, DELETE)])
        w.drain()
        assert w.inbox.counts() == {"done": 1} and w.service.store.size() == 0


def test_a_failing_registry_is_retried_and_the_same_statement_registered(tmp_path: Path) -> None:
    with world(tmp_path, referrers_api=False) as w:
        image = push_image(w.registry, "app", "v1")
        w.push("app", image.digest, "v1")
        # The statement is made and registered, then attaching fails: the retry registers the same bytes.
        w.registry.fail_next(1)
        calls = sum(w.registry.calls.values())
        real_push_blob = w.registry.push_blob
        failures = iter([True])

        def flaky(repo: str, data: bytes) -> str:
            if next(failures, False):
                w.registry.fail_next(1)
            return real_push_blob(repo, data)

        w.registry.push_blob = flaky  # type: ignore[method-assign]  # the real method, failing once first
        [item] = w.inbox.claim(1)
        w.watcher.process(item)  # the manifest read fails first
        assert w.inbox.counts() == {"pending": 1} and sum(w.registry.calls.values()) == calls + 1
        [item] = w.inbox.claim(1)
        w.watcher.process(item)  # attaching fails after registration
        assert item.attempts == 1 and w.inbox.counts() == {"pending": 1} and w.service.store.size() == 1
        [item] = w.inbox.claim(1)
        assert item.statement is not None
        w.watcher.process(item)
        assert w.inbox.counts() == {"done": 1} and w.service.store.size() == 1
        assert len(w.statements("app", image.digest)) == 1


def test_an_image_not_there_yet_is_retried_until_dead(tmp_path: Path) -> None:
    with world(tmp_path) as w:
        missing = mf.digest_of(b"not pushed")
        w.push("app", missing, "v1")
        assert w.drain() == 3  # max_attempts
        [dead] = w.inbox.dead()
        assert dead.attempts == 3 and dead.reason == f"RegistryError: app@{missing} is not in the registry (yet)"


def test_a_signature_of_an_image_not_there_yet_is_retried(tmp_path: Path) -> None:
    with world(tmp_path) as w:
        image = push_image(w.registry, "app", "v1")
        sig = push_referrer(w.registry, "app", image, mf.NOTATION_SIGNATURE, b"x", "application/jose+json")
        w.registry.delete_manifest("app", image.digest)
        w.push("app", sig.digest, None)
        [item] = w.inbox.claim(1)
        w.watcher.process(item)
        [(state, n)] = w.inbox.counts().items()
        assert (state, n) == ("pending", 1) and w.service.store.size() == 0


def _failing_first(w: World, failures: list[Exception]) -> None:
    """The watcher's registrar raises `failures` in turn, then registers as it does."""
    real, scripted = w.watcher.registrar.register, iter(failures)

    def register(statement: bytes) -> bytes:
        exc = next(scripted, None)
        if exc is not None:
            raise exc
        return real(statement)

    w.watcher.registrar.register = register  # type: ignore[method-assign]  # the real method, failing as scripted first


def test_an_unexpected_error_is_retried(tmp_path: Path) -> None:
    with world(tmp_path) as w:
        image = push_image(w.registry, "app", "v1")
        w.push("app", image.digest, "v1")
        _failing_first(w, [ValueError("boom")])
        [item] = w.inbox.claim(1)
        w.watcher.process(item)
        assert w.inbox.counts() == {"pending": 1}
        w.drain()
        assert w.inbox.counts() == {"done": 1} and w.service.store.size() == 1


def test_an_outage_of_the_logs_database_is_retried_past_max_attempts(tmp_path: Path) -> None:
    """The log's own database away (a PostgreSQL restart or failover) is not the event's fault: it is
    retried for as long as the outage lasts, and recorded once the database is back."""
    with world(tmp_path) as w:
        image = push_image(w.registry, "app", "v1")
        w.push("app", image.digest, "v1")
        _failing_first(w, [StoreUnavailable("the PostgreSQL log is out of reach")] * 5)  # max_attempts is 3
        assert w.drain() == 6
        assert w.inbox.counts() == {"done": 1} and w.service.store.size() == 1


@pytest.mark.parametrize(
    ("failure", "traceback"),
    [
        (ClientError("the transparency service answered 503 Service Unavailable", status=503), False),
        (TransportError("connection refused"), False),
        (ValueError("a bug"), True),
    ],
)
def test_an_unavailable_service_is_logged_as_one_line_and_only_a_bug_with_its_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, failure: Exception, traceback: bool
) -> None:
    """A remote transparency service that is down fails every event until it is back: one warning line
    each, naming the event and the answer; a traceback is for errors nothing here anticipates."""
    with world(tmp_path) as w:
        image = push_image(w.registry, "app", "v1")
        w.push("app", image.digest, "v1")

        def register(statement: bytes) -> bytes:
            raise failure

        w.watcher.registrar.register = register  # type: ignore[method-assign]  # failing as scripted
        [item] = w.inbox.claim(1)
        with caplog.at_level(logging.WARNING, logger="scitt_oci.watch.worker"):
            w.watcher.process(item)
        [record] = [r for r in caplog.records if r.name == "scitt_oci.watch.worker"]
        assert str(failure) in record.getMessage() and "will retry" in record.getMessage()
        assert (record.exc_info is not None) is traceback
        assert w.inbox.counts() == {"pending": 1}


def test_a_deletion_of_a_manifest_that_still_exists_makes_no_later_push_new(tmp_path: Path) -> None:
    """A delete event whose manifest is still there (a blob's or a tag's deletion) is skipped, and it
    does not count as the manifest's deletion: the same push heard again afterwards (polling, a
    redelivery without its id) is no new event and adds no second push record."""
    with world(tmp_path) as w:
        image = push_image(w.registry, "app", "v1")
        w.push("app", image.digest, "v1")
        w.drain()
        w.inbox.add(REGISTRY, [RegistryEvent("app", image.digest, None, DELETE)])
        assert w.drain() == 1 and w.service.store.size() == 1
        assert w.inbox.add(REGISTRY, [RegistryEvent("app", image.digest, "v1", PUSH)]) == 0
        assert w.drain() == 0 and w.service.store.size() == 1
        assert [e.kind for e in w.statements("app", image.digest)] == [Kind.PUSH]
        # A real deletion still makes the manifest's next push news.
        w.registry.delete_manifest("app", image.digest)
        w.inbox.add(REGISTRY, [RegistryEvent("app", image.digest, None, DELETE)])
        w.drain()
        push_image(w.registry, "app", "v1")
        assert w.inbox.add(REGISTRY, [RegistryEvent("app", image.digest, "v1", PUSH)]) == 1
        w.drain()
        assert [e.kind for e in w.statements("app", image.digest)] == [Kind.PUSH, Kind.DELETE, Kind.PUSH]


def test_worker_threads_process_events_and_stop(tmp_path: Path) -> None:
    finished = threading.Event()
    with world(tmp_path, workers=2) as w:
        image = push_image(w.registry, "app", "v1")
        w.watcher.on_done = lambda _item, _decision, _t: finished.set()
        assert not w.watcher.alive and not w.watcher.crashed
        w.watcher.start()
        assert w.watcher.alive and not w.watcher.crashed
        w.push("app", image.digest, "v1")
        w.inbox.wakeup.set()
        assert finished.wait(30)
        w.watcher.stop()
        assert not w.watcher.alive and not w.watcher.crashed
        assert w.inbox.counts() == {"done": 1}


class _WatchedInbox(PostgresInbox):
    """A PostgreSQL inbox that counts the claims that found its database out of reach."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.refused = threading.Semaphore(0)

    def claim(self, limit: int = 1) -> list[InboxItem]:
        try:
            return super().claim(limit)
        except InboxUnavailable:
            self.refused.release()
            raise


def test_workers_wait_out_an_inbox_database_out_of_reach_and_carry_on(tmp_path: Path) -> None:
    """PostgreSQL refusing connections for a while (a restart) must not end the workers: they back off,
    /readyz says why, and once the database is back they process events again without a restart."""
    schema = "t_" + uuid.uuid4().hex[:12]
    inbox = _WatchedInbox(f"{DSN} application_name={schema}", schema=schema, base_delay=0.0)
    finished = threading.Event()
    with dropped(schema), world(tmp_path, inbox=inbox, workers=1) as w:
        w.watcher.on_done = lambda _item, _decision, _t: finished.set()
        w.watcher.start()
        working = inbox._dsn
        inbox._dsn = "host=127.0.0.1 port=1 user=scitt password=hunter2 connect_timeout=2"  # nothing listens
        _cut(schema)
        # Two refused claims: the worker lived through the first (and said why) to make the second.
        assert inbox.refused.acquire(timeout=30) and inbox.refused.acquire(timeout=30)
        assert w.watcher.inbox_trouble is not None and "out of reach" in w.watcher.inbox_trouble
        assert "hunter2" not in w.watcher.inbox_trouble
        assert not w.watcher.crashed
        inbox._dsn = working  # the database is back
        image = push_image(w.registry, "app", "v1")
        w.push("app", image.digest, "v1")
        assert finished.wait(30)
        assert w.watcher.alive and not w.watcher.crashed and w.watcher.inbox_trouble is None
        _recorded_once(w, image.digest)


def test_an_unreadable_inbox_is_one_log_line_for_all_the_workers_until_a_claim_goes_through(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with world(tmp_path, workers=8) as w, caplog.at_level(logging.WARNING, logger="scitt_oci.watch.worker"):
        away = InboxUnavailable("the PostgreSQL inbox is out of reach")
        for _ in range(8):  # each worker's failed claim
            w.watcher._unreadable(away)
        assert len(caplog.records) == 1 and w.watcher.inbox_trouble == f"InboxUnavailable: {away}"
        assert w.inbox.claim(1) == [] and w.watcher.inbox_trouble is not None  # not a worker's claim
        w.watcher._claimed = time.monotonic()  # a worker's claim went through: the trouble is over
        assert w.watcher.inbox_trouble is None
        w.watcher._unreadable(away)  # and a new one starts
        assert len(caplog.records) == 2


def test_the_claim_backoff_doubles_to_its_cap_and_never_overflows() -> None:
    from scitt_oci.watch.worker import Watcher

    assert [Watcher.claim_backoff(n) for n in (1, 2, 3)] == [0.2, 0.4, 0.8]
    assert Watcher.claim_backoff(6) == Watcher.claim_backoff(2_000) == Watcher.MAX_BACKOFF  # hours of outage


class SlowRegistrar:
    """The world's registrar, holding each registration until `release` is set (a slow remote service)."""

    def __init__(self, w: World) -> None:
        self.real = w.watcher.registrar
        self.identity = self.real.identity
        self.entered, self.release = threading.Event(), threading.Event()
        w.watcher.registrar = self

    def register(self, statement: bytes) -> bytes:
        self.entered.set()
        assert self.release.wait(30)
        return self.real.register(statement)


def _recorded_once(w: World, digest: str) -> None:
    """The one event is done, with one log entry and one push statement attached to the image."""
    assert w.inbox.counts() == {"done": 1} and w.service.store.size() == 1
    assert [e.kind for e in w.statements("app", digest)] == [Kind.PUSH]


def test_a_long_event_keeps_its_lease_while_it_is_processed(tmp_path: Path) -> None:
    """An event that takes longer than its lease (here a slow transparency service) has the lease renewed
    by the watcher's keeper thread: another worker or replica on the inbox does not take it over after
    the first lease would have run out, and the event is processed once."""
    now = [1000.0]
    with world(tmp_path, workers=1, renew_every=0.01) as w:
        w.inbox.clock = lambda: now[0]
        other = Inbox(tmp_path / "watch.db", clock=lambda: now[0])  # the same 30 s leases
        renewed = threading.Condition()
        renewals: list[float] = []  # the clock as each renewal began
        real_renew = w.inbox.renew

        def renew(item: InboxItem) -> bool:
            at = now[0]
            ok = real_renew(item)
            with renewed:
                if ok:
                    renewals.append(at)
                renewed.notify_all()
            return ok

        w.inbox.renew = renew  # type: ignore[method-assign]  # the real method, observed
        slow = SlowRegistrar(w)
        finished = threading.Event()
        w.watcher.on_done = lambda _item, _decision, _t: finished.set()
        image = push_image(w.registry, "app", "v1")
        w.push("app", image.digest, "v1")
        try:
            w.watcher.start()
            assert slow.entered.wait(30)  # claimed at 1000: held until 1030 unless renewed
            for t in (1025.0, 1050.0):
                now[0] = t
                with renewed:
                    assert renewed.wait_for(lambda: bool(renewals) and renewals[-1] >= t, 30)  # noqa: B023
                now[0] = t + 15  # past the lease as it was before this renewal
                assert other.claim(1) == []
            slow.release.set()
            assert finished.wait(30)
            _recorded_once(w, image.digest)
        finally:
            slow.release.set()
            other.close()


def test_a_lost_lease_is_not_renewed_and_the_late_worker_cannot_finish(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker whose lease ran out all the same (its renewals stalled: a frozen replica, the database
    away) is told so by the renewal, which stops; its late `done` does not count, and the worker that
    took the event over finishes it with the same statement."""
    now = [1000.0]
    with world(tmp_path) as w:  # not started: the test renews, as the keeper thread would
        w.inbox.clock = lambda: now[0]
        other = Inbox(tmp_path / "watch.db", clock=lambda: now[0])
        slow = SlowRegistrar(w)
        image = push_image(w.registry, "app", "v1")
        w.push("app", image.digest, "v1")
        [item] = w.inbox.claim(1)
        worker = threading.Thread(target=w.watcher.process, args=(item,))
        try:
            worker.start()
            assert slow.entered.wait(30)
            now[0] = 1020.0
            assert w.watcher.leases.renew() == []  # renewed: held until 1050
            now[0] = 1040.0
            assert other.claim(1) == []
            now[0] = 1050.0  # no renewal since: the lease ran out
            [taken] = other.claim(1)
            with caplog.at_level(logging.WARNING, logger="scitt_oci.watch.worker"):
                assert w.watcher.leases.renew() == [item]
                assert w.watcher.leases.renew() == []  # a lost lease is not renewed again
            [record] = [r for r in caplog.records if r.name == "scitt_oci.watch.worker"]
            assert f"event {item.id}: its lease ran out" in record.getMessage()
            slow.release.set()
            worker.join(30)
            assert not worker.is_alive()
            assert w.inbox.counts() == {"pending": 1}  # its late done did not count
            assert not w.inbox.done(item)
            assert taken.statement is not None  # saved before the slow registration: the same bytes
            w.watcher.process(taken)
            _recorded_once(w, image.digest)
        finally:
            slow.release.set()
            other.close()


def test_a_finished_event_is_not_renewed_and_not_reported_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Done or failed ends the lease: the keeper stops renewing it first, and says nothing of it."""
    with world(tmp_path) as w:
        image = push_image(w.registry, "app", "v1")
        w.push("app", image.digest, "v1")
        w.push("app", mf.digest_of(b"not pushed"), "v2")
        seen: list[InboxItem] = []
        real_renew = w.inbox.renew

        def renew(item: InboxItem) -> bool:
            seen.append(item)
            return real_renew(item)

        w.inbox.renew = renew  # type: ignore[method-assign]  # the real method, observed
        real_done, real_failed = w.inbox.done, w.inbox.failed

        def done(item: InboxItem, note: str | None = None) -> bool:
            assert w.watcher.leases.renew() == []  # between release and done: the lease is no longer kept
            return real_done(item, note)

        def failed(item: InboxItem, reason: str, **kw: bool) -> bool:
            assert w.watcher.leases.renew() == []
            return real_failed(item, reason, **kw)

        w.inbox.done = done  # type: ignore[method-assign]
        w.inbox.failed = failed  # type: ignore[method-assign]
        with caplog.at_level(logging.WARNING, logger="scitt_oci.watch.worker"):
            assert w.drain() == 2 + 2  # the missing image is retried until dead (max_attempts 3)
            assert w.watcher.leases.renew() == []
        assert seen == [] and w.inbox.counts() == {"done": 1, "dead": 1}
        assert not [r for r in caplog.records if "lease" in r.getMessage()]


def test_a_remote_registrar_returns_the_services_receipt() -> None:
    class Answer:
        receipt = b"receipt"

    class Client:
        def __init__(self) -> None:
            self.sent: list[bytes] = []

        def register(self, statement: bytes) -> Answer:
            self.sent.append(statement)
            return Answer()

    client = Client()
    registrar = RemoteRegistrar(client, "https://ts.test")  # type: ignore[arg-type]  # a double of ScrapiClient.register alone
    assert registrar.register(b"statement") == b"receipt" and client.sent == [b"statement"]


def test_a_deployment_is_recorded_with_where_it_runs(tmp_path: Path) -> None:
    with world(tmp_path) as w:
        image = push_image(w.registry, "app", "v1")
        where = (("cluster", "prod"), ("namespace", "shop"), ("workload", "Deployment/web"))
        w.inbox.add(REGISTRY, [RegistryEvent("app", image.digest, None, DEPLOY, deployment=where)])
        assert w.drain() == 1
        [event] = w.statements("app", image.digest)
        assert event.kind is Kind.DEPLOY and {k: dict(event.details).get(k) for k, _ in where} == dict(where)
