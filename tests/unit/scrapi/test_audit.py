"""The log auditor in process, against logs built from the real Merkle and receipt code: an honest log,
one that shrank, two forks, a key change; the evidence it keeps verifies offline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from scitt_oci.cose import keys
from scitt_oci.cose.keys import CoseKey
from scitt_oci.errors import ScittOciError
from scitt_oci.scitt import merkle, receipt
from scitt_oci.scitt.reasons import Reason, VerificationFailure
from scitt_oci.scrapi import audit
from scitt_oci.tlog import checkpoint as tlog_checkpoint
from scitt_oci.tlog import note
from scitt_oci.tlog import policy as tlog_policy
from tests.helpers import key

TS = "https://ts.example"


class Ledger:
    """A service's log as the auditor reads it: keys, a signed checkpoint, consistency receipts."""

    def __init__(self, signing_key: CoseKey, entries: list[bytes]) -> None:
        self.signing_key = signing_key
        self.entries = entries
        self.calls: list[str] = []
        self.clock = 1_700_000_000  # the iat it signs with: each checkpoint is signed a second later

    def _leaves(self) -> list[bytes]:
        return [merkle.leaf_hash(e) for e in self.entries]

    def head(self, size: int) -> receipt.SignedTreeHead:
        root = merkle.root_of(self._leaves()[:size])
        return receipt.sign_tree_head(
            self.signing_key, issuer=TS, subject="log", tree_size=size, root=root, iat=self.clock
        )

    def keys(self) -> list[CoseKey]:
        self.calls.append("keys")
        k = self.signing_key
        return [CoseKey(k.public, k.kid, k.alg)]

    def checkpoint(self) -> bytes:
        self.calls.append("checkpoint")
        self.clock += 1
        return receipt.checkpoint_bytes(self.head(len(self.entries)))

    def consistency(self, old_size: int, new_size: int) -> bytes:
        self.calls.append(f"consistency {old_size} {new_size}")
        path = merkle.consistency_path(old_size, new_size, merkle.list_hasher(self._leaves()))
        return receipt.consistency_receipt(self.head(new_size), old_size, path)


def _entries(*names: str) -> list[bytes]:
    return [n.encode() for n in names]


def _first(log: Ledger, tmp_path: Path) -> audit.AuditState:
    result = audit.audit(log, TS, None, evidence_dir=tmp_path / "evidence")
    assert result.outcome is audit.Outcome.FIRST and result.state is not None
    return result.state


def test_an_honest_log_is_consistent_and_the_state_moves_on(tmp_path: Path) -> None:
    log = Ledger(key(), _entries("a", "b", "c"))
    first = audit.audit(log, TS, None, now=lambda: "t1")
    assert first.outcome is audit.Outcome.FIRST and first.message.startswith("first audit: 3 entries")
    assert [k.kid for k in first.pinned] == [key().kid]  # pinned on first use
    assert first.state is not None and first.state.head.checkpoint is not None
    assert receipt.read_checkpoint(first.state.head.checkpoint, log.keys())[:2] == (3, log.head(3).root)
    # The state survives a round trip through its file, checkpoint included.
    state_file = tmp_path / "audit.json"
    audit.save_state(state_file, first.state)
    loaded = audit.load_state(state_file, TS)
    assert loaded == first.state
    log.entries += _entries("d", "e")
    log.calls.clear()
    second = audit.audit(log, TS, loaded, evidence_dir=tmp_path / "evidence")
    assert second.outcome is audit.Outcome.CONSISTENT and second.pinned == () and second.evidence is None
    assert second.message == f"consistent: 3 -> 5 entries, root {log.head(5).root.hex()}"
    assert log.calls == ["checkpoint", "consistency 3 5"]  # the pinned keys, not the service's, are used
    assert second.state is not None and (second.state.head.size, second.state.head.root) == (5, log.head(5).root)
    # Nothing new: the same size with the same root is consistent too, and needs no proof.
    log.calls.clear()
    third = audit.audit(log, TS, second.state)
    assert third.outcome is audit.Outcome.CONSISTENT and log.calls == ["checkpoint"]
    assert not (tmp_path / "evidence").exists()


def test_a_log_that_shrank_keeps_both_checkpoints_as_evidence(tmp_path: Path) -> None:
    log = Ledger(key(), _entries("a", "b", "c", "d", "e"))
    state = _first(log, tmp_path)
    log.entries = log.entries[:3]
    result = audit.audit(log, TS, state, evidence_dir=tmp_path / "evidence", now=lambda: "t2")
    assert result.outcome is audit.Outcome.INCONSISTENT and result.reason is Reason.LOG_SHRANK
    assert result.state is None and result.message == "the log shrank from 5 to 3 entries"
    folder = tmp_path / "evidence"
    assert result.evidence_dir == folder
    summary = json.loads((folder / "evidence.json").read_text())
    assert summary["reason"] == "LOG_SHRANK" and summary["ts"] == TS and summary["found_at"] == "t2"
    assert summary["consistency_proof"] is None
    # Offline: both checkpoints verify with the kept keys, and the service signed a size below one it signed before.
    service_keys = keys.load_cose_key_set((folder / summary["service_keys"]).read_bytes())
    old = receipt.read_checkpoint((folder / summary["old"]["checkpoint"]).read_bytes(), service_keys)
    new = receipt.read_checkpoint((folder / summary["new"]["checkpoint"]).read_bytes(), service_keys)
    assert (old[0], new[0]) == (5, 3) and summary["old"]["tree_size"] == 5 and summary["new"]["tree_size"] == 3


def test_a_fork_at_the_same_size_is_two_signed_roots(tmp_path: Path) -> None:
    log = Ledger(key(), _entries("a", "b", "c"))
    state = _first(log, tmp_path)
    log.entries = _entries("x", "b", "c")
    result = audit.audit(log, TS, state, evidence_dir=tmp_path / "evidence")
    assert result.outcome is audit.Outcome.INCONSISTENT and result.reason is Reason.INCONSISTENT_LOG
    assert "size 3 now has root" in result.message
    folder = tmp_path / "evidence"
    service_keys = keys.load_cose_key_set((folder / "service-keys.cbor").read_bytes())
    old = receipt.read_checkpoint((folder / "old-checkpoint.cose").read_bytes(), service_keys)
    new = receipt.read_checkpoint((folder / "new-checkpoint.cose").read_bytes(), service_keys)
    assert old[0] == new[0] == 3 and old[1] != new[1] and old[2].kid == new[2].kid  # one key, two histories
    assert not (folder / "consistency.cose").exists()


def test_a_fork_that_grew_keeps_the_proof_that_does_not_hold(tmp_path: Path) -> None:
    log = Ledger(key(), _entries("a", "b", "c"))
    state = _first(log, tmp_path)
    log.entries = _entries("x", "b", "c", "d")  # another history, one entry longer
    result = audit.audit(log, TS, state, evidence_dir=tmp_path / "evidence")
    assert result.outcome is audit.Outcome.INCONSISTENT and result.reason is Reason.INCONSISTENT_LOG
    assert result.state is None
    folder = tmp_path / "evidence"
    summary = json.loads((folder / "evidence.json").read_text())
    assert summary["consistency_proof"] == "consistency.cose" and summary["reason"] == "INCONSISTENT_LOG"
    service_keys = keys.load_cose_key_set((folder / "service-keys.cbor").read_bytes())
    proof = (folder / "consistency.cose").read_bytes()
    old_size, old_root, _k = receipt.read_checkpoint((folder / "old-checkpoint.cose").read_bytes(), service_keys)
    new_size, new_root, _k = receipt.read_checkpoint((folder / "new-checkpoint.cose").read_bytes(), service_keys)
    assert (old_size, new_size) == (3, 4)
    # Offline: the service's signed proof does not lead from the head it showed before ...
    with pytest.raises(VerificationFailure) as info:
        receipt.verify_consistency_receipt(proof, old_size=3, old_root=old_root, keys=service_keys)
    assert info.value.reason is Reason.INCONSISTENT_LOG
    # ... it leads from another size-3 history to the new checkpoint, under the same key.
    other_root = merkle.root_of([merkle.leaf_hash(e) for e in _entries("x", "b", "c")])
    assert receipt.verify_consistency_receipt(proof, old_size=3, old_root=other_root, keys=service_keys)[:2] == (
        new_size,
        new_root,
    )


def test_a_proof_ending_elsewhere_than_the_checkpoint_is_inconsistent(tmp_path: Path) -> None:
    log = Ledger(key(), _entries("a", "b", "c"))
    state = _first(log, tmp_path)
    log.entries += _entries("d", "e")
    honest = log.consistency

    def short(old_size: int, new_size: int) -> bytes:
        return honest(old_size, new_size - 1)  # a valid proof, to the size-4 head

    log.consistency = short  # type: ignore[method-assign]  # the real method, proving to an older head
    result = audit.audit(log, TS, state, evidence_dir=tmp_path / "evidence")
    assert result.outcome is audit.Outcome.INCONSISTENT and result.reason is Reason.INCONSISTENT_LOG
    assert result.message == "the consistency proof ends at another tree head than the checkpoint"
    kept = (tmp_path / "evidence" / "consistency.cose").read_bytes()
    assert receipt.verify_consistency_receipt(kept, old_size=3, old_root=state.head.root, keys=log.keys())[:2] == (
        4,
        log.head(4).root,
    )


def test_a_key_change_is_refused_until_the_new_key_is_given(tmp_path: Path) -> None:
    log = Ledger(key(slot=0), _entries("a", "b", "c"))
    state = _first(log, tmp_path)
    log.signing_key = key(slot=1)
    log.entries += _entries("d")
    with pytest.raises(audit.AuditError, match=f"signed by key {key(slot=1).kid.hex()}, which is not pinned") as info:
        audit.audit(log, TS, state, evidence_dir=tmp_path / "evidence")
    assert "--keys" in str(info.value)
    assert not (tmp_path / "evidence").exists()  # not evidence of anything: the new key is not trusted
    # Given the new key (checked with the operator), the audit goes on over the same history.
    result = audit.audit(log, TS, state, keys=log.keys())
    assert result.outcome is audit.Outcome.CONSISTENT and result.state is not None
    assert [k.kid for k in result.state.keys] == [key(slot=1).kid]
    # Keys given on a first audit are used as given: nothing is pinned from the service.
    log.calls.clear()
    given = audit.audit(log, TS, None, keys=log.keys())
    assert given.pinned == () and "keys" not in log.calls[1:]


def test_a_checkpoint_that_does_not_verify_is_an_error_not_an_inconsistency(tmp_path: Path) -> None:
    log = Ledger(key(), _entries("a"))
    with pytest.raises(ScittOciError, match="does not verify with any trusted service key"):
        audit.audit(log, TS, None, keys=[Ledger(key(slot=2), []).keys()[0]], evidence_dir=tmp_path / "e")
    assert not (tmp_path / "e").exists()


def test_states_from_earlier_versions_load_and_bad_ones_are_named(tmp_path: Path) -> None:
    log = Ledger(key(), _entries("a", "b"))
    path = tmp_path / "audit.json"
    earlier = {
        "ts": TS,
        "tree_size": 2,
        "root": log.head(2).root.hex(),
        "checked_at": "then",
        "keys": [log.keys()[0].to_jwk()],
    }
    path.write_text(json.dumps(earlier))
    state = audit.load_state(path, TS)
    assert state is not None and state.head.checkpoint is None and state.head.size == 2
    log.entries = _entries("a")
    # Without the old signed checkpoint a smaller size shows nothing anyone else could check: not LOG_SHRANK.
    with pytest.raises(audit.StaleCheckpoint, match="saved without its checkpoint"):
        audit.audit(log, TS, state, evidence_dir=tmp_path / "evidence")
    assert not (tmp_path / "evidence").exists()
    log.entries = _entries("a", "b", "c")  # a larger size is still checked against the saved size and root
    grown = audit.audit(log, TS, state, evidence_dir=tmp_path / "evidence")
    assert grown.outcome is audit.Outcome.CONSISTENT and grown.head.size == 3
    assert audit.load_state(tmp_path / "none.json", TS) is None
    with pytest.raises(audit.AuditError, match=f"records audits of '{TS}', not 'https://other'"):
        audit.load_state(path, "https://other")
    for text, why in (
        ("{", "cannot read audit state"),
        ("[]", "not a JSON object"),
        (json.dumps({"ts": TS}), "needs ts"),
    ):
        path.write_text(text)
        with pytest.raises(audit.AuditError, match=why):
            audit.load_state(path, TS)


class Witnessing:
    """A log's C2SP checkpoints, signed by its note key and cosigned by one witness."""

    def __init__(self) -> None:
        self.log = note.NoteSigner("ts.example/tlog", ed25519.Ed25519PrivateKey.generate())
        self.witness = tlog_checkpoint.Cosigner("w.example/witness", ed25519.Ed25519PrivateKey.generate())
        other = tlog_checkpoint.Cosigner("w2.example/witness", ed25519.Ed25519PrivateKey.generate())
        self.met = tlog_policy.parse(
            f"log {self.log.verifier.vkey}\nwitness W {self.witness.verifier.vkey}\nquorum W\n"
        )
        self.unmet = tlog_policy.parse(
            f"log {self.log.verifier.vkey}\nwitness W {self.witness.verifier.vkey}\n"
            f"witness W2 {other.verifier.vkey}\ngroup both 2 W W2\nquorum both\n"
        )

    def note(self, size: int, root: bytes) -> bytes:
        text = tlog_checkpoint.Checkpoint("ts.example/tlog", size, root).text()
        return note.Note(text, (self.log.sign(text), self.witness.cosign(text, 1_700_000_000))).encode()


def test_a_witnessed_head_decides_and_is_kept_as_evidence(tmp_path: Path) -> None:
    log = Ledger(key(), _entries("a", "b", "c"))
    tlog = Witnessing()
    seen = audit.witnessed(tlog.note(3, log.head(3).root), tlog.met, "met.policy")
    assert (seen.size, seen.root, seen.cosigners) == (3, log.head(3).root, ("w.example/witness",))
    with pytest.raises(
        audit.Refused, match=r"checkpoint of size 3 is below the witness quorum \(group both: 2 of W, W2"
    ):
        audit.witnessed(seen.note, tlog.unmet, "unmet.policy")
    with pytest.raises(audit.Refused, match="the checkpoint does not verify under met.policy"):
        audit.witnessed(seen.note.replace(b"\n3\n", b"\n4\n"), tlog.met, "met.policy")
    first = audit.audit(log, TS, None, witness=lambda: seen)
    assert first.witnessed == seen and first.state is not None and first.state.head.witnessed == seen.note
    # The witnessed head (not the newest COSE checkpoint) is what later audits compare with.
    log.entries += _entries("d")
    lagging = audit.audit(log, TS, first.state, witness=lambda: seen)
    assert lagging.outcome is audit.Outcome.CONSISTENT and lagging.head.size == 3
    forked = audit.witnessed(tlog.note(3, merkle.root_of([merkle.leaf_hash(b"x")] * 3)), tlog.met, "met.policy")
    result = audit.audit(log, TS, first.state, witness=lambda: forked, evidence_dir=tmp_path / "evidence")
    assert result.outcome is audit.Outcome.INCONSISTENT and result.reason is Reason.INCONSISTENT_LOG
    kept = {p.name for p in (tmp_path / "evidence").iterdir()}
    assert {"old-checkpoint.note", "new-checkpoint.note", "old-checkpoint.cose", "new-checkpoint.cose"} <= kept
    for name in ("old-checkpoint.note", "new-checkpoint.note"):  # both verify offline under the witness policy
        assert audit.witnessed((tmp_path / "evidence" / name).read_bytes(), tlog.met, "met.policy").size == 3
    # A state with a witnessed head survives its file.
    audit.save_state(tmp_path / "audit.json", first.state)
    assert audit.load_state(tmp_path / "audit.json", TS) == first.state


def test_an_older_signed_head_is_a_stale_answer_not_evidence(tmp_path: Path) -> None:
    log = Ledger(key(), _entries("a", "b", "c"))
    state = _first(log, tmp_path)
    replayed = log.checkpoint()  # the size-3 head, validly signed: a cache or an attacker may keep it
    log.entries += _entries("d", "e")
    grown = audit.audit(log, TS, state)
    assert grown.outcome is audit.Outcome.CONSISTENT and grown.state is not None
    log.checkpoint = lambda: replayed  # type: ignore[method-assign]  # served again, after the size-5 head
    with pytest.raises(audit.StaleCheckpoint, match=r"stale checkpoint: .* 3 entries, fewer than the 5") as info:
        audit.audit(log, TS, grown.state, evidence_dir=tmp_path / "evidence")
    assert "2023-11-14T22:13:22+00:00, no later than the 5 entries signed at 2023-11-14T22:13:23+00:00" in str(
        info.value
    )
    assert not (tmp_path / "evidence").exists()  # nothing to show anyone: an old head stays valid
    # A smaller tree signed in the same second as the accepted one proves no shrink either ...
    log = Ledger(key(), _entries("a", "b", "c"))
    state = _first(log, tmp_path)
    log.entries, log.clock = log.entries[:2], log.clock - 1  # checkpoint() adds the second back
    with pytest.raises(audit.StaleCheckpoint):
        audit.audit(log, TS, state, evidence_dir=tmp_path / "evidence")
    # ... signed later, it does: the service signed a smaller tree after a larger one.
    shrank = audit.audit(log, TS, state, evidence_dir=tmp_path / "evidence")
    assert shrank.reason is Reason.LOG_SHRANK and shrank.evidence_dir == tmp_path / "evidence"


def test_a_proof_from_another_size_is_inconsistent_log_saying_so(tmp_path: Path) -> None:
    log = Ledger(key(), _entries("a", "b", "c"))
    state = _first(log, tmp_path)
    log.entries += _entries("d", "e")
    honest = log.consistency
    log.consistency = lambda old_size, new_size: honest(old_size - 1, new_size)  # type: ignore[method-assign]
    result = audit.audit(log, TS, state, evidence_dir=tmp_path / "evidence")
    assert result.outcome is audit.Outcome.INCONSISTENT and result.reason is Reason.INCONSISTENT_LOG
    assert result.message == (
        "no valid consistency proof from 3 entries: consistency proof starts at size 2, not at the known size 3"
    )
    assert json.loads((tmp_path / "evidence" / "evidence.json").read_text())["reason"] == "INCONSISTENT_LOG"


def _shrunk(tmp_path: Path) -> tuple[Ledger, audit.AuditState]:
    log = Ledger(key(), _entries("a", "b", "c"))
    state = _first(log, tmp_path)
    log.entries = log.entries[:2]
    return log, state


def test_evidence_is_never_overwritten(tmp_path: Path) -> None:
    log, state = _shrunk(tmp_path)
    folder = tmp_path / "kept"
    first = audit.audit(log, TS, state, evidence_dir=folder)
    assert first.evidence_dir == folder
    kept = {p.name: p.read_bytes() for p in folder.iterdir()}
    with pytest.raises(audit.AuditError, match=f"evidence folder {folder} is not empty: evidence is never overwritten"):
        audit.audit(log, TS, state, evidence_dir=folder)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == kept
    # The default folder (named by the time) gets a fresh name when taken: two finds in one instant.
    second = audit.audit(log, TS, state, evidence_dir=folder, unique_evidence=True)
    third = audit.audit(log, TS, state, evidence_dir=folder, unique_evidence=True)
    assert (second.evidence_dir, third.evidence_dir) == (tmp_path / "kept-2", tmp_path / "kept-3")
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == kept
    assert audit.evidence_folder(tmp_path / "s.json") != audit.evidence_folder(tmp_path / "s.json")  # to the µs


def test_paths_that_cannot_be_written_are_named(tmp_path: Path) -> None:
    log, state = _shrunk(tmp_path)
    (tmp_path / "file").write_text("")
    with pytest.raises(audit.AuditError) as info:
        audit.audit(log, TS, state, evidence_dir=tmp_path / "file" / "ev")
    assert str(info.value).startswith("the log is INCONSISTENT (LOG_SHRANK: the log shrank from 3 to 2 entries), but ")
    assert f"cannot write the evidence to {tmp_path / 'file' / 'ev'}: " in str(info.value)
    with pytest.raises(audit.AuditError, match=f"cannot write the audit state {tmp_path / 'file' / 's.json'}"):
        audit.save_state(tmp_path / "file" / "s.json", state)
