"""The Transparency Service: registration, receipts, keys, checkpoints and consistency proofs.

Faces (HTTP, CLI) call this; it holds the domain logic and nothing about HTTP.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from scitt_oci.cose.keys import CoseKey
from scitt_oci.errors import ScittOciError
from scitt_oci.log.policy import RegistrationPolicy, Rejection
from scitt_oci.log.sequencer import BatchObserver, Registration, Sequencer
from scitt_oci.log.store import LogStore, Pending, StoredHead, entry_id
from scitt_oci.lru import LruCache
from scitt_oci.scitt import merkle, receipt
from scitt_oci.scitt.receipt import SignedTreeHead


@dataclass(frozen=True)
class Submission:
    entry_id: bytes
    registration: Registration | None  # None: the entry was already in the log


class ConsistencyError(ScittOciError):
    """A consistency proof was asked for sizes the log cannot prove between."""


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
        max_delay: float = 0.002,
        max_queue: int = 50_000,
        observer: BatchObserver | None = None,
        max_entry_bytes: int | None = None,
    ) -> None:
        self.store = store
        self.max_entry_bytes = max_entry_bytes  # the C2SP entry bundles' limit when tiles are served
        self.key = key
        self.policy = policy
        self.identity = identity
        self.log_id = log_id
        self._receipts: LruCache[bytes, bytes] = LruCache(20_000)  # receipts never change once made
        self._resigned: LruCache[tuple[int, bytes], SignedTreeHead] = LruCache(64)
        self.sequencer = Sequencer(
            store, self._sign, max_batch=max_batch, max_delay=max_delay, max_queue=max_queue, observer=observer
        )

    def _sign(self, size: int, root: bytes) -> receipt.SignedTreeHead:
        return receipt.sign_tree_head(
            self.key, issuer=self.identity, subject=self.log_id, tree_size=size, root=root, iat=int(time.time())
        )

    def start(self) -> None:
        self.sequencer.start()

    def stop(self) -> None:
        self.sequencer.stop()

    # ----- keys -----
    def keys(self) -> list[CoseKey]:
        return [self.key]

    def find_key(self, kid: bytes) -> CoseKey | None:
        return next((k for k in self.keys() if kid in k.aliases), None)

    # ----- registration -----
    def submit(self, data: bytes) -> Submission:
        """Check `data` against the registration policy, then queue it (`Rejection` if refused)."""
        signed = self.policy.check(data)
        entry = signed.entry()
        if self.max_entry_bytes is not None and len(entry) > self.max_entry_bytes:
            raise Rejection(
                "Payload Too Large",
                f"the log entry would be {len(entry)} bytes; this log serves C2SP tiles, whose entries are at most {self.max_entry_bytes}",
                413,
            )
        eid = entry_id(entry)
        if self._receipts.get(eid) is not None:  # known and recent: no need to queue it again
            return Submission(eid, None)
        # An entry already in the log is recognised by the sequencer's commit, which answers with its index.
        return Submission(eid, self.sequencer.submit(Pending(eid, entry)))

    def pending(self, eid: bytes) -> bool:
        """Accepted and not yet integrated."""
        return self.sequencer.in_flight(eid) or self.store.is_pending(eid)

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
                raise ScittOciError(f"the log has entry {index} but no tree head covering it")
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
