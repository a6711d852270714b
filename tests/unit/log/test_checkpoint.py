"""Checkpoints and consistency receipts sign their tree size, also for heads stored before sizes were signed."""

from __future__ import annotations

from pathlib import Path

from scitt_oci.cose import headers, sign1
from scitt_oci.log.policy import RegistrationPolicy
from scitt_oci.log.service import TransparencyService
from scitt_oci.log.sqlite_store import SqliteStore
from scitt_oci.log.store import Pending, entry_id
from scitt_oci.scitt import receipt
from tests.helpers import key


def _unsized(size: int, root: bytes) -> receipt.SignedTreeHead:
    """How heads were signed before: no tree size in the protected header."""
    protected = {headers.KID: key(slot=9).kid, headers.VDS: headers.VDS_RFC9162_SHA256}
    message = sign1.sign(key(slot=9), protected, None, detached_payload=root)
    return receipt.SignedTreeHead(message.protected_bytes, message.signature, size, root)


def _p(n: int) -> Pending:
    e = f"entry {n}".encode()
    return Pending(entry_id(e), e)


def test_heads_stored_without_a_signed_size_are_served_with_one(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "log.db", synchronous="NORMAL")
    store.commit(accept=[], integrate=[_p(1), _p(2)], sign=_unsized, now=0)
    store.commit(accept=[], integrate=[_p(3), _p(4), _p(5)], sign=_unsized, now=0)
    service = TransparencyService(store, key(slot=9), RegistrationPolicy(), identity="https://ts")
    head = store.head()
    assert head is not None and not receipt.signs_its_size(head.signed())
    size, root, _k = receipt.read_checkpoint(service.checkpoint() or b"", [key(slot=9)])
    assert (size, root) == (5, head.root)
    assert service.checkpoint() == service.checkpoint()  # signed once, then kept
    old = store.head(2)
    assert old is not None
    new_size, new_root, verified = receipt.verify_consistency_receipt(
        service.consistency(2), old_size=2, old_root=old.root, keys=[key(slot=9)], require_signed_size=True
    )
    assert (new_size, new_root, verified.size_signed) == (5, head.root, True)
    # What the store holds is unchanged: inclusion receipts of those heads stay as they were.
    assert store.head() == head
