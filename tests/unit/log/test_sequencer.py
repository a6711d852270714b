"""The sequencer over a real SQLite store: batching bounds, restart from pending, duplicates in flight."""

from __future__ import annotations

from pathlib import Path

from scitt_oci.log.sequencer import Sequencer
from scitt_oci.log.sqlite_store import SqliteStore
from scitt_oci.log.store import Pending, entry_id
from scitt_oci.scitt import receipt
from tests.helpers import key


def _sign(size: int, root: bytes) -> receipt.SignedTreeHead:
    return receipt.sign_tree_head(key(slot=9), issuer="https://ts", subject="log", tree_size=size, root=root)


def _p(n: int) -> Pending:
    e = f"entry {n}".encode()
    return Pending(entry_id(e), e)


def test_batches_respect_the_size_bound_and_duplicates_share_a_registration(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "log.db", synchronous="NORMAL")
    sizes: list[int] = []
    seq = Sequencer(store, _sign, max_batch=10, max_delay=0.001, observer=lambda r, s: sizes.append(len(r.integrated)))
    regs = [seq.submit(_p(i)) for i in range(95)]
    assert seq.submit(_p(3)) is regs[3]
    seq.start()
    indexes = sorted(r.integrated.result(timeout=10)[0] for r in regs)
    seq.stop()
    assert indexes == list(range(95)) and max(sizes) <= 10 and store.size() == 95


def test_pending_entries_are_integrated_after_a_restart(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "log.db", synchronous="NORMAL")
    store.commit(accept=[_p(1), _p(2)], integrate=[], sign=_sign, now=0)  # accepted, then the process died
    store.close()
    store = SqliteStore(tmp_path / "log.db", synchronous="NORMAL")
    seq = Sequencer(store, _sign, max_delay=0.001)
    seq.start()
    late = seq.submit(_p(3))
    assert late.integrated.result(timeout=10)[0] == 2
    seq.stop()
    assert store.lookup(_p(1).entry_id) == 0 and store.lookup(_p(2).entry_id) == 1 and not store.pending(10)


def test_long_delay_accepts_before_integrating(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "log.db", synchronous="NORMAL")
    seq = Sequencer(store, _sign, max_delay=0.5)
    seq.start()
    reg = seq.submit(_p(1))
    reg.accepted.result(timeout=5)
    assert not reg.integrated.done() and store.is_pending(_p(1).entry_id)
    index, head = reg.integrated.result(timeout=5)
    assert index == 0 and head is not None and head.tree_size == 1
    seq.stop()
