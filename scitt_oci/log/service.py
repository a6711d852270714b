"""The Transparency Service: registration, receipts, keys, checkpoints and consistency proofs.

Faces (HTTP, CLI) call this; it holds the domain logic and nothing about HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
from dataclasses import dataclass

from scitt_oci.cose.keys import CoseKey
from scitt_oci.errors import ConsistencyError as ConsistencyError  # defined there since #12; kept importable here
from scitt_oci.errors import NotAccepted as NotAccepted
from scitt_oci.errors import StoreError, StoreUnavailable
from scitt_oci.log.policy import RegistrationPolicy, Rejection, RejectionKind
from scitt_oci.log.sequencer import BatchObserver, Registration, Sequencer
from scitt_oci.log.store import LogStore, Pending, StoredHead, entry_id
from scitt_oci.lru import LruCache
from scitt_oci.scitt import merkle, receipt
from scitt_oci.scitt.receipt import SignedTreeHead

log = logging.getLogger(__name__)

# Seconds a registration may take to become durable before it is answered 503 (retry): a database that
# stalls costs a registration no more than a read of it waits (server.offloop.DEADLINE).
ACCEPT_TIMEOUT = 10.0


@dataclass(frozen=True)
class Submission:
    entry_id: bytes
    registration: Registration | None  # None: the entry was already in the log


@dataclass(frozen=True)
class Registered:
    """The statement is in the log: its entry id and receipt."""

    entry_id: bytes
    receipt: bytes


@dataclass(frozen=True)
class Accepted:
    """The statement is stored durably and will be integrated: ask for its receipt by entry id later."""

    entry_id: bytes


Outcome = Registered | Accepted


class TransparencyService:
    def __init__(
        self,
        store: LogStore,
        key: CoseKey,
        policy: RegistrationPolicy,
        *,
        identity: str,
        log_id: str = "scitt-oci/log",
        max_batch: int = 1000,
        max_delay: float = 0.005,
        max_queue: int = 50_000,
        observer: BatchObserver | None = None,
        max_entry_bytes: int | None = None,
        accept_timeout: float = ACCEPT_TIMEOUT,
    ) -> None:
        self.store = store
        self.accept_timeout = accept_timeout
        self.max_entry_bytes = max_entry_bytes  # the C2SP entry bundles' limit when tiles are served
        self.key = key
        self.policy = policy
        self.identity = identity
        self.log_id = log_id
        self._receipts: LruCache[bytes, bytes] = LruCache(20_000)  # receipts never change once made
        self._resigned: LruCache[tuple[int, bytes], SignedTreeHead] = LruCache(64)
        self.sequencer = Sequencer(
            store,
            self._sign,
            max_batch=max_batch,
            max_delay=max_delay,
            max_queue=max_queue,
            observer=observer,
            settled=self._settled,
        )

    def _settled(self, settled: list[Registration]) -> None:
        """On the sequencer thread after each commit: the receipts of the entries this batch appended, made
        together (they share the head's encoding) and cached, before any waiter is woken to ask for one.
        The waiters are woken even if that fails: `receipt` makes a missing one on demand."""
        try:
            made: dict[int, tuple[StoredHead, list[tuple[bytes, int]]]] = {}  # by tree size: one head per batch
            for reg in settled:
                integrated = reg.integrated
                if integrated.done() and integrated.exception() is None:
                    index, head = integrated.result()
                    if head is not None and index in head.paths:
                        made.setdefault(head.tree_size, (head, []))[1].append((reg.pending.entry_id, index))
            for head, entries in made.values():
                receipts = receipt.inclusion_receipts(head.signed(), [(i, head.paths[i]) for _eid, i in entries])
                self._receipts.put_many([(eid, r) for (eid, _i), r in zip(entries, receipts, strict=True)])
        finally:
            _wake_waiters(settled)

    def _sign(self, size: int, root: bytes) -> receipt.SignedTreeHead:
        return receipt.sign_tree_head(
            self.key, issuer=self.identity, subject=self.log_id, tree_size=size, root=root, iat=int(time.time())
        )

    def start(self) -> None:
        self.sequencer.start()

    def stop(self) -> None:
        self.sequencer.stop()

    @property
    def running(self) -> bool:
        """The sequencer is integrating registrations."""
        return self.sequencer.alive

    @property
    def waiting(self) -> int:
        """Registrations accepted by this process and not yet integrated."""
        return self.sequencer.queued

    # ----- keys -----
    def keys(self) -> list[CoseKey]:
        return [self.key]

    def find_key(self, kid: bytes) -> CoseKey | None:
        return next((k for k in self.keys() if kid in k.aliases), None)

    # ----- registration -----
    def _submit(self, data: bytes) -> Submission:
        """Check `data` against the registration policy, then queue it (`Rejection` if refused)."""
        signed = self.policy.check(data)
        entry = signed.entry()
        if self.max_entry_bytes is not None and len(entry) > self.max_entry_bytes:
            raise Rejection(
                RejectionKind.TOO_LARGE,
                f"the log entry would be {len(entry)} bytes; this log serves C2SP tiles, whose entries are at most {self.max_entry_bytes}",
            )
        eid = entry_id(entry)
        if self._receipts.get(eid) is not None:  # known and recent: no need to queue it again
            return Submission(eid, None)
        # An entry already in the log is recognised by the sequencer's commit, which answers with its index.
        return Submission(eid, self.sequencer.submit(Pending(eid, entry)))

    def register(self, statement: bytes, wait: float) -> Outcome:
        """Register `statement`: `Registered` once integrated within `wait` seconds, else `Accepted` (durable).
        Raises `Rejection` (refused by the policy), `Overloaded` (queue full) or `NotAccepted`."""
        started = time.monotonic()
        submission = self._submit(statement)
        reg = submission.registration
        if reg is None:
            return self._known(submission.entry_id)
        with contextlib.suppress(Exception):  # a failure or timeout is read from the settlements by `_outcome`
            reg.accepted.result(self.accept_timeout)
            remaining = wait - (time.monotonic() - started)
            if remaining > 0:
                reg.integrated.result(remaining)
        return self._outcome(submission.entry_id, reg)

    async def register_async(self, statement: bytes, wait: float) -> Outcome:
        """`register` for an event loop: the policy check runs inline, the waits do not block the loop.

        The sequencer wakes the loop once per batch for all of its registrations (`_wake_waiters`),
        not once per registration."""
        started = time.monotonic()
        submission = self._submit(statement)
        reg = submission.registration
        if reg is None:
            return self._known(submission.entry_id)
        if not reg.integrated.done():
            await _settle(reg, started + wait, started + self.accept_timeout)
        return self._outcome(submission.entry_id, reg)

    def _known(self, eid: bytes) -> Registered:
        found = self.receipt(eid)
        if found is None:  # only recent entries are recognised before queueing: their receipts are cached
            raise StoreError(f"entry {eid.hex()} was recognised as logged but has no receipt")
        return Registered(eid, found)

    def _outcome(self, eid: bytes, reg: Registration) -> Outcome:
        """What the waits of `register` and `register_async` came to, read from the registration's settlements."""
        integrated = reg.integrated
        if integrated.done() and integrated.exception() is None:
            found = self.receipt(eid, *integrated.result())
            return Accepted(eid) if found is None else Registered(eid, found)
        # Accepted means durable: only then may the caller report success. (The sequencer fails a
        # registration's integration only together with its acceptance, when a commit fails.)
        accepted = reg.accepted
        if not accepted.done():  # the commit is stuck (a stalled database): the client retries, idempotently
            raise StoreUnavailable(
                f"the log store did not make entry {eid.hex()} durable within {self.accept_timeout:g} s"
            )
        failure = accepted.exception()
        if isinstance(failure, StoreUnavailable):  # the database is away, not the statement at fault
            raise StoreUnavailable(str(failure))
        if failure is not None:
            log.warning("registration %s not accepted: %r", eid.hex(), failure)
            raise NotAccepted(f"the log could not store entry {eid.hex()} ({type(failure).__name__}); retry later")
        return Accepted(eid)

    def pending(self, eid: bytes) -> bool:
        """Accepted and not yet integrated."""
        return self.sequencer.in_flight(eid) or self.store.is_pending(eid)

    def recent_receipt(self, eid: bytes) -> bytes | None:
        """The receipt of a recently integrated entry, from memory (no database read), or None."""
        return self._receipts.get(eid)

    def receipt(self, eid: bytes, index: int | None = None, head: StoredHead | None = None) -> bytes | None:
        """The receipt of an integrated entry: the signed head of the batch that appended it plus an
        inclusion proof (so the same entry always gets the same receipt)."""
        cached = self._receipts.get(eid)
        if cached is not None:
            return cached
        if index is None:
            index = self.store.lookup(eid)
            if index is None:
                return None
        if head is None:
            head = self.store.head_covering(index)
            if head is None:
                raise StoreError(f"the log has entry {index} but no tree head covering it")
        path = head.paths.get(index)  # computed by the batch's commit when it was just made here
        if path is None:
            path = merkle.inclusion_path(index, head.tree_size, self.store.tree().hash_range)
        value = receipt.inclusion_receipt(head.signed(), index, path)
        self._receipts.put(eid, value)
        return value

    # ----- auditors -----
    def _size_signed(self, head: StoredHead) -> SignedTreeHead:
        """`head` signed with its tree size in the protected header: heads stored before sizes were
        signed get a new signature over the same root and size (kept, so each is signed once here)."""
        sth = head.signed()
        if receipt.signs_its_size(sth):
            return sth
        key = (head.tree_size, head.root)
        signed = self._resigned.get(key)
        if signed is None:
            signed = self._sign(head.tree_size, head.root)
            self._resigned.put(key, signed)
        return signed

    def checkpoint(self) -> bytes | None:
        """The latest signed tree head as a COSE_Sign1 whose payload is the root (attached) and whose
        protected header signs the tree size."""
        head = self.store.head()
        if head is None:
            return None
        return receipt.checkpoint_bytes(self._size_signed(head))

    def consistency(self, old_size: int, new_size: int | None = None) -> bytes:
        """A consistency receipt from `old_size` to `new_size` (a batch boundary; default: the latest)."""
        head = self.store.head(new_size)
        if head is None:
            raise ConsistencyError(
                f"the log has no signed tree head of size {new_size}" if new_size else "the log is empty"
            )
        if not 0 < old_size <= head.tree_size:
            raise ConsistencyError(f"no consistency proof from size {old_size} to size {head.tree_size}")
        path = merkle.consistency_path(old_size, head.tree_size, self.store.tree().hash_range)
        return receipt.consistency_receipt(self._size_signed(head), old_size, path)


class _Waiter:
    """An event loop's wait for one registration: woken when the sequencer settles or advances it."""

    __slots__ = ("future", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.future: asyncio.Future[None] = loop.create_future()


def _wake_waiters(settled: list[Registration]) -> None:
    """On the sequencer thread, after a commit: one hand-over to each waiting event loop for the whole batch."""
    by_loop: dict[asyncio.AbstractEventLoop, list[asyncio.Future[None]]] = {}
    for reg in settled:
        if not reg.waiters:
            continue
        for waiter in tuple(reg.waiters):  # a snapshot: the loops add and remove their own waiters
            assert isinstance(waiter, _Waiter)
            by_loop.setdefault(waiter.loop, []).append(waiter.future)
    for loop, futures in by_loop.items():
        with contextlib.suppress(RuntimeError):  # that loop is closed: nobody waits there any more
            loop.call_soon_threadsafe(_wake, futures)


def _wake(futures: list[asyncio.Future[None]]) -> None:
    for future in futures:
        if not future.done():
            future.set_result(None)


class _Deadlines:
    """The deadlines of one event loop's waiters, kept in slots of `GRAIN` seconds with one timer per slot.

    Registrations arrive by the thousand and share their deadlines to within a few milliseconds: a
    timer each (made, and cancelled once the batch settles them) cost more than the wait. A waiter's
    slot fires at or after its deadline, late by less than `GRAIN`; a waiter woken earlier by its batch
    is simply found done."""

    GRAIN = 0.01
    __slots__ = ("loop", "slots")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.slots: dict[int, list[asyncio.Future[None]]] = {}

    def add(self, deadline: float, future: asyncio.Future[None]) -> None:
        """Wake `future` once `deadline` (time.monotonic) has passed, unless it is done by then."""
        slot = math.ceil(deadline / self.GRAIN)
        waiting = self.slots.get(slot)
        if waiting is None:
            waiting = self.slots[slot] = []
            # Relative to now: a loop's own clock (uvloop's) need not be time.monotonic.
            self.loop.call_later(slot * self.GRAIN - time.monotonic(), self._fire, slot)
        waiting.append(future)

    def _fire(self, slot: int) -> None:
        _wake(self.slots.pop(slot, []))


_thread_deadlines = threading.local()  # a thread runs one loop at a time: its deadlines are kept here


def _deadlines_of(loop: asyncio.AbstractEventLoop) -> _Deadlines:
    """The running loop's `_Deadlines`. A thread that runs another loop gets new ones; the timers of the
    old ones still fire their own slots, so nothing is lost, only shared less for a moment."""
    found: _Deadlines | None = getattr(_thread_deadlines, "value", None)
    if found is None or found.loop is not loop:
        found = _thread_deadlines.value = _Deadlines(loop)
    return found


async def _settle(reg: Registration, integrate_by: float, accept_by: float) -> None:
    """Wait until `reg` is integrated (or failed), or accepted once `integrate_by` has passed, or
    `accept_by` passes unaccepted; the outcome is read from its settlements afterwards.

    A waiter is listed on the registration before its settlements are looked at, and the sequencer
    sets them before it reads the list, so no settlement goes unnoticed."""
    loop = asyncio.get_running_loop()
    deadlines = _deadlines_of(loop)
    while not reg.integrated.done():
        now = time.monotonic()
        accepted = reg.accepted.done()
        deadline = integrate_by if accepted or now < integrate_by else accept_by
        if now >= deadline:
            return
        waiter = _Waiter(loop)
        reg.waiters.append(waiter)
        try:
            if reg.integrated.done() or reg.accepted.done() != accepted:
                continue  # settled or advanced meanwhile: look again
            deadlines.add(deadline, waiter.future)
            await waiter.future
        finally:
            reg.waiters.remove(waiter)
