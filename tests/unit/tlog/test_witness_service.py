"""The witness's add-checkpoint rules on a real SQLite file, without HTTP."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ed25519

from scitt_oci.replication.witness import Witness
from scitt_oci.scitt import merkle
from scitt_oci.tlog import checkpoint, note, witness

LEAVES = [merkle.leaf_hash(b"%d" % i) for i in range(20)]
LOG = note.NoteSigner("log.test/a", ed25519.Ed25519PrivateKey.generate())


def _note(size: int, root: bytes | None = None) -> bytes:
    cp = checkpoint.Checkpoint(LOG.name, size, root or merkle.root_of(LEAVES[:size]))
    return checkpoint.sign(cp, LOG).encode()


def _witness(tmp_path: Path) -> Witness:
    cosigner = checkpoint.Cosigner("w.test/w", ed25519.Ed25519PrivateKey.generate())
    return Witness(tmp_path / "witness.db", cosigner, {LOG.name: [LOG.verifier]})


def test_rules_that_need_no_server(tmp_path: Path) -> None:
    w = _witness(tmp_path)
    assert (tmp_path / "witness.db").stat().st_mode & 0o777 == 0o600
    proof = merkle.consistency_path(3, 7, merkle.list_hasher(LEAVES))
    assert w.add_checkpoint(witness.encode(0, proof[:1], _note(7))).status == 422  # a proof with old size 0
    ok = w.add_checkpoint(witness.encode(0, [], _note(3)), now=1_700_000_000)
    assert ok.status == 200
    sig = note.Signature.parse(ok.body.decode())
    assert checkpoint.verify_cosignature(w.cosigner.verifier, _note(3).split(b"\n\n")[0] + b"\n", sig) == 1_700_000_000
    assert w.add_checkpoint(witness.encode(3, proof[:1], _note(3))).status == 422  # equal sizes with a proof
    assert w.add_checkpoint(witness.encode(3, [], _note(3))).status == 200  # the same checkpoint again
    assert w.add_checkpoint(witness.encode(3, proof, _note(7))).status == 200
    assert w.latest(LOG.name) == (7, merkle.root_of(LEAVES[:7]))
    # Refused signed checkpoints are kept as possible evidence.
    forged = witness.encode(7, merkle.consistency_path(7, 9, merkle.list_hasher(LEAVES)), _note(9, b"\5" * 32))
    assert w.add_checkpoint(forged).status == 422
    with sqlite3.connect(tmp_path / "witness.db") as db:
        assert db.execute("SELECT COUNT(*) FROM refused").fetchone()[0] == 3
    assert w.latest(LOG.name) == (7, merkle.root_of(LEAVES[:7]))
