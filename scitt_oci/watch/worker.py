"""The watcher's workers: turn inbox events into Signed Statements, register them, attach the
Transparent Statements to the images as referrers. Every step is idempotent; see `inbox`."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Generic, Protocol, TypeVar

from scitt_oci.cose.keys import CoseKey
from scitt_oci.errors import PermanentError, ScittOciError, StoreError, StoreUnavailable
from scitt_oci.log.service import Registered, TransparencyService
from scitt_oci.oci import manifest as mf
from scitt_oci.oci.attached import resolve_tag
from scitt_oci.oci.client import RegistryError
from scitt_oci.oci.manifest import Descriptor
from scitt_oci.oci.reference import Digest, Reference, valid_tag
from scitt_oci.oci.registry import Registry
from scitt_oci.scitt import profile, transparent
from scitt_oci.scitt import statement as statement_mod
from scitt_oci.scrapi.client import ScrapiClient
from scitt_oci.signatures.artifact import MAX_LAYER_BYTES, layers_to_fetch, verify_signature
from scitt_oci.signatures.model import ArtifactKind, SignatureCheck
from scitt_oci.signatures.trust import SignatureTrust
from scitt_oci.watch.classify import Decision, classify
from scitt_oci.watch.events import DELETE, PUSH, RegistryEvent
from scitt_oci.watch.inbox import Inbox, InboxItem

log = logging.getLogger(__name__)


class Registrar(Protocol):
    identity: str

    def register(self, statement: bytes) -> bytes:
        """Register `statement`; return its receipt."""


@dataclass
class EmbeddedRegistrar:
    service: TransparencyService
    timeout: float = 30.0
    identity: str = field(init=False)

    def __post_init__(self) -> None:
        self.identity = self.service.identity

    def register(self, statement: bytes) -> bytes:
        outcome = self.service.register(statement, self.timeout)
        if not isinstance(outcome, Registered):  # stored, not yet integrated: the event is retried
            raise StoreError(f"the embedded log did not integrate entry {outcome.entry_id.hex()} in {self.timeout} s")
        return outcome.receipt


@dataclass
class RemoteRegistrar:
    client: ScrapiClient
    identity: str

    def register(self, statement: bytes) -> bytes:
        return self.client.register(statement).receipt


R = TypeVar("R", bound=Registry)


class LeaseKeeper:
    """Renews the leases of the events a watcher's workers are processing, so that an event that takes
    longer than `lease_seconds` (a slow registry, big signature layers, a slow remote transparency
    service) is not taken over by another worker or replica and done twice. One keeper (and one
    thread, `run`) per watcher renews every event in process; a worker holds its event from the claim
    until it marks it done or failed."""

    def __init__(self, inbox: Inbox) -> None:
        self.inbox = inbox
        self._held: dict[tuple[int, str | None], InboxItem] = {}
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def holding(self, item: InboxItem) -> Iterator[None]:
        """Keep `item`'s lease while the block runs."""
        with self._lock:
            self._held[item.id, item.lease] = item
        try:
            yield
        finally:
            self.release(item)

    def release(self, item: InboxItem) -> None:
        """Stop renewing `item` (before it is marked done or failed, which ends its lease)."""
        with self._lock:
            self._held.pop((item.id, item.lease), None)

    def renew(self) -> list[InboxItem]:
        """Renew every lease held now, once; returns the leases found lost (no longer renewed)."""
        with self._lock:
            held = list(self._held.values())
        lost = []
        for item in held:
            if self.inbox.renew(item):
                continue
            with self._lock:
                # Released meanwhile: finished (done or failed ended the lease), not lost.
                if self._held.pop((item.id, item.lease), None) is None:
                    continue
            lost.append(item)
            log.warning(
                "event %s: its lease ran out before it could be renewed; another worker may hold it now "
                "(this one's outcome will not count)",
                item.id,
            )
        return lost

    def run(self, stop: threading.Event, interval: float) -> None:
        """Renew every `interval` seconds until `stop` is set."""
        while not stop.wait(interval):
            try:
                self.renew()
            except Exception as exc:  # the database away for a moment: the next round tries again
                log.warning("renewing the leases of the events in process failed: %s: %s", type(exc).__name__, exc)


class Watcher(Generic[R]):
    """Workers over `inbox`, one `Registry` client per configured registry name (`R`: its type, e.g.
    `RegistryClient`, so that callers keep the client's own extras such as request counts)."""

    MAX_BACKOFF = 5.0  # seconds between claims while the inbox cannot be read

    def __init__(
        self,
        inbox: Inbox,
        clients: dict[str, R],
        issuer_key: CoseKey,
        issuer: str,
        registrar: Registrar,
        *,
        workers: int = 4,
        on_done: Callable[[InboxItem, Decision | None, float], None] | None = None,
        signature_trust: SignatureTrust | None = None,
        renew_every: float | None = None,
    ) -> None:
        self.inbox = inbox
        self.clients = clients
        self.issuer_key = issuer_key
        self.issuer = issuer
        self.registrar = registrar
        self.workers = workers
        self.on_done = on_done
        self.signature_trust = signature_trust or SignatureTrust()
        # Leases are renewed three times a lease: a renewal late or failed once does not lose one.
        self.renew_every = renew_every if renew_every is not None else inbox.lease_seconds / 3
        self.leases = LeaseKeeper(inbox)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._keeper_stop = threading.Event()
        self._keeper: threading.Thread | None = None
        # The latest claim that failed (when, why) and the time of the latest that did not, of any worker.
        self._claim_failed: tuple[float, str] = (0.0, "")
        self._claimed = 0.0
        self._trouble_told = -1.0  # when the workers last logged that the inbox cannot be read

    def start(self) -> None:
        for i in range(self.workers):
            t = threading.Thread(target=self._run, name=f"scitt-oci-watch-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        # Stopped after the workers: an event still in process when `stop` is called keeps its lease.
        self._keeper = threading.Thread(
            target=self.leases.run,
            args=(self._keeper_stop, self.renew_every),
            name="scitt-oci-watch-leases",
            daemon=True,
        )
        self._keeper.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self.inbox.wakeup.set()
        for t in self._threads:
            t.join(timeout)
        self._keeper_stop.set()
        if self._keeper is not None:
            self._keeper.join(timeout)

    @property
    def alive(self) -> bool:
        threads = [*self._threads, *([self._keeper] if self._keeper else [])]
        return bool(threads) and all(t.is_alive() for t in threads)

    @property
    def crashed(self) -> bool:
        """Started, not stopped, and a worker thread (or the lease keeper's) is gone."""
        return bool(self._threads) and not self._stop.is_set() and not self.alive

    def _run(self) -> None:
        failures = 0  # claims failed in a row: the inbox's database out of reach
        while not self._stop.is_set():
            try:
                items = self.inbox.claim(1)
            except Exception as exc:  # the worker waits it out: it never stops on the database's account
                failures += 1
                self._unreadable(exc)
                self._stop.wait(self.claim_backoff(failures))
                continue
            self._claimed = time.monotonic()
            if failures:
                failures = 0
                log.info("the inbox is readable again")
            if not items:
                self.inbox.wakeup.wait(self.inbox.idle_wait)
                self.inbox.wakeup.clear()
                continue
            try:
                self.process(items[0])
            except Exception as exc:  # the outcome could not be stored: the lease runs out, the event is taken again
                log.warning(
                    "event %s: its outcome could not be stored (%s: %s); it is processed again when its lease runs out",
                    items[0].id,
                    type(exc).__name__,
                    exc,
                )

    @classmethod
    def claim_backoff(cls, failures: int) -> float:
        """Seconds before the next claim after `failures` in a row: doubling up to MAX_BACKOFF (the
        exponent capped: a worker waits out an outage of any length, and 2.0 ** 1100 is past a float)."""
        return min(cls.MAX_BACKOFF, 0.1 * 2.0 ** min(failures, 10))

    @property
    def inbox_trouble(self) -> str | None:
        """Why the workers cannot read the inbox now (None: the latest claim went through)."""
        when, why = self._claim_failed
        return why if when > self._claimed else None

    def _unreadable(self, exc: Exception) -> None:
        now = time.monotonic()
        self._claim_failed = (now, f"{type(exc).__name__}: {exc}")
        # One line for all the workers: when the trouble starts (a claim went through since the last
        # line), then every five minutes while it lasts.
        if self._claimed >= self._trouble_told or now - self._trouble_told >= 300:
            self._trouble_told = now
            if isinstance(exc, ScittOciError):
                log.warning("the inbox cannot be read (%s); retrying", exc)
            else:
                log.exception("the inbox cannot be read (%s: %s); retrying", type(exc).__name__, exc)

    def process(self, item: InboxItem) -> None:
        """Process a claimed event, its lease renewed until it is done or failed."""
        with self.leases.holding(item):
            self._process_held(item)

    def _process_held(self, item: InboxItem) -> None:
        started = time.monotonic()
        try:
            decision = self._process(item)
        except Exception as exc:  # retried until max attempts, then dead-lettered; a PermanentError at once
            self.leases.release(item)
            dead = self.inbox.failed(
                item,
                f"{type(exc).__name__}: {exc}",
                permanent=isinstance(exc, PermanentError),
                outage=isinstance(exc, StoreUnavailable),
            )
            outcome = "dead" if dead else "will retry"
            if isinstance(exc, (ScittOciError, OSError)):  # anticipated (a registry or service down): one line
                log.warning("event %s %s: %s", item.id, outcome, exc)
            else:  # nothing here expects it: the traceback is what finds the bug
                log.exception("event %s %s: %s: %s", item.id, outcome, type(exc).__name__, exc)
            return
        if self.on_done is not None:
            self.on_done(item, decision, time.monotonic() - started)

    def _process(self, item: InboxItem) -> Decision:
        event = item.event
        client = self._client(item)
        read = self._read(item, client, self._digest(client, event))
        if isinstance(read, Decision):  # nothing to read: done already
            return read
        digest, manifest, descriptor = read
        decision = classify(event, digest, manifest)
        if not decision.record:
            self._done(item, f"skipped: {decision.reason}")
            return decision
        if self._said_before(item, decision, digest):
            self._done(item, "skipped: a push without a tag of a manifest already on record")
            return Decision(None, reason="already on record")
        if decision.children:
            self.inbox.add(
                item.registry,
                [RegistryEvent(event.repository, c.digest, None, PUSH, c.media_type) for c in decision.children],
            )
        assert decision.kind is not None and decision.subject_digest is not None
        subject = self._subject(item, client, decision, descriptor)
        statement = item.statement
        if statement is None:
            check = None
            if decision.kind in profile.SIGNED_KINDS:
                assert manifest is not None and subject is not None
                check = self._verify(client, event.repository, decision, manifest, subject)
            statement = self._statement(item, decision, digest, manifest, check)
        signed = statement_mod.parse(statement)
        if decision.kind in profile.SIGNED_KINDS:  # the statement says which (a .sig may hold an attestation)
            decision = replace(decision, kind=profile.read_event(signed).kind)
        assert decision.kind is not None and decision.subject_digest is not None
        receipt = self.registrar.register(statement)
        ts = transparent.add_receipts(signed, [receipt])
        referrer = None
        if subject is not None:
            referrer = self._attach(client, event.repository, decision, subject, signed, ts, manifest, descriptor)
        self.inbox.record(
            item.registry,
            event.repository,
            decision.subject_digest,
            decision.kind.value,
            digest,
            descriptor.media_type if descriptor else None,
            descriptor.size if descriptor else None,
            referrer,
        )
        self._done(item, None if subject else "registered; the deleted image has no record to attach to")
        return decision

    def _said_before(self, item: InboxItem, decision: Decision, digest: str) -> bool:
        """A push that names no tag, of a manifest whose push is on record (and not deleted since): the
        same news again (a tag-less webhook, a platform manifest heard of twice). A push naming a tag is
        recorded again (the tag now names the manifest); one whose statement is made is finished."""
        return (
            item.statement is None
            and decision.kind is profile.Kind.PUSH
            and item.event.tag is None
            and self.inbox.push_on_record(item.registry, item.event.repository, digest)
        )

    def _done(self, item: InboxItem, note: str | None) -> None:
        self.leases.release(item)  # first: a renewal after `done` finds no lease, and that is no loss
        self.inbox.done(item, note)

    def _client(self, item: InboxItem) -> Registry:
        """The client of the event's registry, once the event is one that can ever succeed."""
        client = self.clients.get(item.registry)
        if client is None:
            raise PermanentError(f"registry {item.registry!r} is not configured")
        tag = item.event.tag
        if tag is not None and not valid_tag(tag):  # stored before webhooks validated tags
            raise PermanentError(f"the tag {tag[:100]!a} is not a tag; never used in a registry path")
        return client

    @staticmethod
    def _digest(client: Registry, event: RegistryEvent) -> str:
        """The event's digest; a tag-only event's is resolved now."""
        if event.digest is not None:
            return event.digest
        found = resolve_tag(client, event.repository, event.tag or "")
        if found is None:
            raise PermanentError(f"{event.repository}:{event.tag} does not exist")
        return found.digest

    def _read(
        self, item: InboxItem, client: Registry, digest: str
    ) -> Decision | tuple[str, mf.Manifest | None, Descriptor | None]:
        """(digest, manifest, descriptor) of what the event is about (no manifest for a deletion), or the
        decision when the event needs no more: a blob deletion, or news of our own writes."""
        event = item.event
        if event.action == DELETE:
            if client.head_manifest(event.repository, digest) is not None:
                self.inbox.not_a_deletion(item)
                self._done(item, "skipped: the manifest still exists (a blob deletion)")
                return Decision(None, reason="blob deletion")
            return digest, None, None
        if event.action == PUSH and (
            client.pushed_here(event.repository, digest)
            or (mf.is_fallback_tag(event.tag) and event.media_type == mf.OCI_INDEX)
        ):
            # The news of our own referrer or index write (or of a referrers index, which is never an
            # image, as reconciliation has it): nothing to record, and no registry read needed to know.
            self._done(item, "skipped: our own referrer or a referrers index")
            return Decision(None, reason="own write")
        fetched = client.manifest(event.repository, digest)
        if fetched is None:
            raise RegistryError(f"{event.repository}@{digest} is not in the registry (yet)", 503)
        data, media_type, digest = fetched
        manifest = mf.parse(data, media_type)
        return digest, manifest, Descriptor(manifest.media_type, digest, len(data))

    def _attach(
        self,
        client: Registry,
        repository: str,
        decision: Decision,
        subject: Descriptor,
        signed: statement_mod.SignedStatement,
        ts: bytes,
        manifest: mf.Manifest | None,
        descriptor: Descriptor | None,
    ) -> str:
        """Attach the Transparent Statement `ts` to `subject`; returns the referrer's digest."""
        assert decision.kind is not None
        iat = signed.claims.iat if signed.claims and signed.claims.iat else int(time.time())
        artifact = mf.statement_artifact(
            subject, ts, kind=decision.kind.value, issuer=self.issuer, service=self.registrar.identity, created=iat
        )
        # A signature or attestation that is itself a referrer of the image (Notation, Sigstore bundles)
        # belongs in the same index: listing it again heals a concurrent signer's lost write.
        also = []
        if (
            decision.kind in profile.SIGNED_KINDS
            and manifest is not None
            and descriptor is not None
            and manifest.subject is not None
            and manifest.subject.digest == subject.digest
        ):
            also.append(
                replace(descriptor, artifact_type=manifest.effective_artifact_type, annotations=manifest.annotations)
            )
        return client.attach(repository, subject, artifact, [ts], also=also)

    def _subject(
        self, item: InboxItem, client: Registry, decision: Decision, own: Descriptor | None
    ) -> Descriptor | None:
        event = item.event
        assert decision.subject_digest is not None
        if decision.kind in (profile.Kind.PUSH, profile.Kind.DEPLOY):
            return own
        if decision.kind is profile.Kind.DELETE:
            known = self.inbox.pushed(item.registry, event.repository, decision.subject_digest)
            return Descriptor(known[0], decision.subject_digest, known[1]) if known else None
        found = client.head_manifest(event.repository, decision.subject_digest)
        if found is None:
            raise RegistryError(f"the signed image {decision.subject_digest} is not in {event.repository} (yet)", 503)
        return found

    def _verify(
        self, client: Registry, repository: str, decision: Decision, manifest: mf.Manifest, subject: Descriptor
    ) -> SignatureCheck:
        """Verify the signature artifact against the configured signature trust, reading its layers."""
        assert decision.format is not None
        blobs = {}
        for layer in layers_to_fetch(decision.format, manifest):
            data = client.blob(repository, layer.digest, limit=MAX_LAYER_BYTES)
            if data is not None:
                blobs[layer.digest] = data
        check = verify_signature(
            decision.format, manifest, blobs, subject, self.signature_trust, dt.datetime.now(dt.UTC)
        )
        if check.verified:
            log.info(
                "%s signature of %s verified: %s (trust %s)", check.format, subject.digest, check.signer, check.anchor
            )
        else:
            log.warning("%s signature of %s NOT verified: %s", check.format, subject.digest, check.reason)
        return check

    def _statement(
        self,
        item: InboxItem,
        decision: Decision,
        digest: str,
        manifest: mf.Manifest | None,
        check: SignatureCheck | None = None,
    ) -> bytes:
        """Build and sign the statement once, and store it before it is registered (see module doc)."""
        assert decision.kind is not None and decision.subject_digest is not None
        event = item.event
        kind = decision.kind
        subject = Reference(item.registry, event.repository, None, Digest.parse(decision.subject_digest))
        details: dict[str, profile.Detail] = {}
        if kind in (profile.Kind.PUSH, profile.Kind.DELETE) and event.tag:
            details["tag"] = event.tag
        if kind is profile.Kind.DEPLOY:
            details.update(dict(event.deployment))
        if check is not None:
            details.update(verification_details(check))
            kind = profile.Kind.ATTESTATION if check.kind is ArtifactKind.ATTESTATION else profile.Kind.SIGNATURE
        recorded = Digest.parse(digest) if kind in profile.SIGNED_KINDS else None
        media_type = manifest.media_type if manifest else None
        built = profile.build(
            self.issuer_key,
            self.issuer,
            profile.make_event(kind, subject, recorded_digest=recorded, media_type=media_type, **details),
            iat=int(time.time()),
        ).encode()
        return self.inbox.save_statement(item, built)


def _text(value: str) -> str:
    return value if len(value) <= 1024 else value[:1021] + "..."


def verification_details(check: SignatureCheck) -> dict[str, profile.Detail]:
    """The profile header members that say what was verified (docs/profile.md, v2)."""
    out: dict[str, profile.Detail] = {"format": check.format.value, "verified": check.verified}
    if check.predicate_type:
        out["predicate-type"] = _text(check.predicate_type)
    if not check.verified:
        out["reason"] = _text(check.reason or "not verified")
        return out
    named = {
        "signer": check.signer,
        "oidc-issuer": check.oidc_issuer,
        "key-id": check.key_id,
        "chain": ",".join(check.chain) or None,
        "anchor": check.anchor,
        "timestamp": check.timestamp,
    }
    out.update({k: _text(v) for k, v in named.items() if v})
    return out
