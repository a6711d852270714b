"""tlog-witness between real `scitt-oci serve` instances: the add-checkpoint answers the spec names,
no rollback under 100 concurrent calls, two instances witnessing each other (409 then retry after a
restart), and cosigned checkpoints that verify with the witness's vkey (ours and tlog-scales')."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from tlog_scales import signing as ts_signing
from tlog_scales import tlog as ts_tlog

from scitt_oci.scitt import merkle
from scitt_oci.tlog import checkpoint, note, witness
from tests.integration.test_mirror import grow, wait_for
from tests.serverproc import ServerProcess, free_port

ADD = "/tlog/witness/add-checkpoint"


def _key_file(path: Path) -> ed25519.Ed25519PrivateKey:
    key = ed25519.Ed25519PrivateKey.generate()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    return key


class MemoryLog:
    def __init__(self, origin: str) -> None:
        self.signer = note.NoteSigner(origin, ed25519.Ed25519PrivateKey.generate())
        self.leaves = [merkle.leaf_hash(b"%d" % i) for i in range(64)]

    def note(self, size: int, root: bytes | None = None) -> bytes:
        cp = checkpoint.Checkpoint(self.signer.name, size, root or merkle.root_of(self.leaves[:size]))
        return checkpoint.sign(cp, self.signer).encode()

    def proof(self, old: int, new: int) -> list[bytes]:
        return merkle.consistency_path(old, new, merkle.list_hasher(self.leaves))


@pytest.fixture(scope="module")
def logs() -> tuple[MemoryLog, MemoryLog]:
    return MemoryLog("log.test/one"), MemoryLog("log.test/two")


@pytest.fixture(scope="module")
def witness_srv(tmp_path_factory: pytest.TempPathFactory, logs: tuple[MemoryLog, MemoryLog]) -> Iterator[ServerProcess]:
    base = tmp_path_factory.mktemp("w")
    env = {
        "SCITT_OCI_WITNESS__LOGS": json.dumps([{"vkey": lg.signer.verifier.vkey} for lg in logs]),
        "SCITT_OCI_WITNESS__NAME": "witness.test/w1",
    }
    srv = ServerProcess(base / "data", env=env).start()
    yield srv
    srv.stop()


def _post(srv: ServerProcess, body: bytes) -> requests.Response:
    return requests.post(srv.url + ADD, data=body, timeout=30)


def test_add_checkpoint_answers_as_the_spec_says(witness_srv: ServerProcess, logs: tuple[MemoryLog, MemoryLog]) -> None:
    lg = logs[0]
    wkey = note.parse_vkey(requests.get(witness_srv.url + "/tlog/witness/vkey", timeout=5).text)
    assert wkey.sig_type == note.COSIGNATURE_V1 and wkey.name == "witness.test/w1"
    assert (witness_srv.data_dir / "keys" / "witness.pem").stat().st_mode & 0o777 == 0o600
    ok = _post(witness_srv, witness.encode(0, [], lg.note(5)))
    assert ok.status_code == 200, ok.text
    [line] = ok.text.splitlines()
    cp_text = lg.note(5).split(b"\n\n")[0] + b"\n"
    assert checkpoint.verify_cosignature(wkey, cp_text, note.Signature.parse(line)) > 0
    # tlog-scales verifies the cosignature too.
    ts_cp = ts_tlog.Checkpoint.from_text((lg.note(5) + (line + "\n").encode()).decode())
    ts_key = ts_signing.Vkey.from_string(wkey.vkey)
    assert len(ts_signing.VkeySet(ts_key).verify(ts_cp.signatures, ts_cp)) == 1
    conflict = _post(witness_srv, witness.encode(0, [], lg.note(8)))
    assert conflict.status_code == 409 and conflict.content == b"5\n"
    assert conflict.headers["content-type"].startswith("text/x.tlog.size")
    bad_proof = _post(witness_srv, witness.encode(5, [b"\0" * 32] * len(lg.proof(5, 8)), lg.note(8)))
    assert bad_proof.status_code == 422
    other_root = _post(witness_srv, witness.encode(5, [], lg.note(5, b"\1" * 32)))
    assert other_root.status_code == 422
    assert _post(witness_srv, witness.encode(5, lg.proof(5, 8), lg.note(8))).status_code == 200
    # Unknown origin 404; a signature by another key 403; old above new 400; garbage 400; size 0 root 422.
    stranger = MemoryLog("log.test/unknown")
    assert _post(witness_srv, witness.encode(0, [], stranger.note(3))).status_code == 404
    impostor = MemoryLog(lg.signer.name)
    assert _post(witness_srv, witness.encode(8, [], impostor.note(8))).status_code == 403
    assert _post(witness_srv, witness.encode(9, [], lg.note(8))).status_code == 400
    assert _post(witness_srv, b"old 1\nnot base64\n\nx").status_code == 400
    assert _post(witness_srv, witness.encode(0, [], logs[1].note(0, b"\2" * 32))).status_code == 422
    # The stored size never went down.
    assert _post(witness_srv, witness.encode(0, [], lg.note(1))).content == b"8\n"


def test_no_rollback_under_100_concurrent_calls(witness_srv: ServerProcess, logs: tuple[MemoryLog, MemoryLog]) -> None:
    lg = logs[1]
    assert _post(witness_srv, witness.encode(0, [], lg.note(10))).status_code == 200
    bodies = [witness.encode(10, lg.proof(10, 40), lg.note(40)), witness.encode(10, lg.proof(10, 20), lg.note(20))] * 50
    with ThreadPoolExecutor(100) as pool:
        answers = list(pool.map(lambda b: _post(witness_srv, b), bodies))
    statuses = [a.status_code for a in answers]
    assert statuses.count(200) == 1 and statuses.count(409) == 99, statuses
    winner = bodies[statuses.index(200)]
    won_size = witness.parse(winner).checkpoint.split(b"\n")[1]
    # The record is the winner's size, whatever the order: nothing rolled it back.
    assert _post(witness_srv, witness.encode(0, [], lg.note(1))).content == won_size + b"\n"


# ----- two instances witnessing each other -----
def _instance(base: Path, name: str) -> tuple[ServerProcess, str, str]:
    data = base / name
    grow(data, 10, tag=name)
    note_key = _key_file(data / "keys" / "note.pem")
    witness_key = _key_file(data / "keys" / "witness.pem")
    srv = ServerProcess(data)
    srv.port = free_port()
    note_vkey = note.Verifier(f"{name}.test/tlog", note.ED25519, note_key.public_key().public_bytes_raw()).vkey
    witness_vkey = note.Verifier(
        f"{name}.test/witness", note.COSIGNATURE_V1, witness_key.public_key().public_bytes_raw()
    ).vkey
    return srv, note_vkey, witness_vkey


def _cosigned_size(srv: ServerProcess, log_vkey: str, witness_vkey: str) -> int:
    r = requests.get(srv.url + "/tlog/checkpoint", timeout=5)
    if r.status_code != 200:
        return -1
    opened = checkpoint.open_signed(r.content, [note.parse_vkey(log_vkey)])
    cosigned = checkpoint.cosigned_by(opened.note, [note.parse_vkey(witness_vkey)])
    return opened.checkpoint.size if cosigned else -1


def test_two_instances_witness_each_other_and_retry_after_409(tmp_path: Path) -> None:
    a, a_note, a_witness = _instance(tmp_path, "a")
    b, b_note, b_witness = _instance(tmp_path, "b")
    for me, peer, peer_note, peer_witness, name in ((a, b, b_note, b_witness, "a"), (b, a, a_note, a_witness, "b")):
        me.env = {
            "SCITT_OCI_TLOG__ORIGIN": f"{name}.test/tlog",
            "SCITT_OCI_WITNESS__NAME": f"{name}.test/witness",
            "SCITT_OCI_WITNESS__LOGS": json.dumps([{"vkey": peer_note}]),
            "SCITT_OCI_WITNESSES": json.dumps([{"url": peer.url, "vkey": peer_witness}]),
            "SCITT_OCI_WITNESS_QUORUM": "1",
        }
    a.start()
    b.start()
    try:
        wait_for(lambda: _cosigned_size(a, a_note, b_witness) == 10)
        wait_for(lambda: _cosigned_size(b, b_note, a_witness) == 10)
        # tlog-scales checks A's published checkpoint: A's note signature and B's cosignature.
        text = requests.get(a.url + "/tlog/checkpoint", timeout=5).text
        ts_cp = ts_tlog.Checkpoint.from_text(text)
        keys = ts_signing.VkeySet(ts_signing.Vkey.from_string(a_note), ts_signing.Vkey.from_string(b_witness))
        assert len(keys.verify(ts_cp.signatures, ts_cp)) == 2
        # A grows: the new checkpoint is cosigned with a consistency proof from 10.
        grow(a.data_dir, 300, tag="a")
        wait_for(lambda: _cosigned_size(a, a_note, b_witness) == 300)
        # A restarts and has forgotten what B holds: B answers 409 with 300, A retries from there.
        a.stop()
        grow(a.data_dir, 333, tag="a")
        a.start()
        wait_for(lambda: _cosigned_size(a, a_note, b_witness) == 333)
        assert "holds size 300; retrying from there" in a.output()
    finally:
        a.stop()
        b.stop()


def test_quorum_holds_publication_back_until_witnesses_cosign(tmp_path: Path) -> None:
    a, a_note, _ = _instance(tmp_path, "a")
    w, _, w_vkey = _instance(tmp_path, "w")
    a.env = {
        "SCITT_OCI_TLOG__ORIGIN": "a.test/tlog",
        "SCITT_OCI_WITNESSES": json.dumps([{"url": w.url, "vkey": w_vkey}]),
        "SCITT_OCI_WITNESS_QUORUM": "1",
    }
    w.env = {"SCITT_OCI_WITNESS__NAME": "w.test/witness", "SCITT_OCI_WITNESS__LOGS": json.dumps([{"vkey": a_note}])}
    a.start()
    w.start()
    try:
        wait_for(lambda: _cosigned_size(a, a_note, w_vkey) == 10)
        _audit_and_mirror_with_policies(tmp_path, a, a_note, w_vkey)
        w.stop()
        grow(a.data_dir, 50, tag="a")
        wait_for(lambda: "did not cosign size 50" in a.output())
        # Size 50 has no cosignature: /tlog/checkpoint still publishes the witnessed 10.
        assert _cosigned_size(a, a_note, w_vkey) == 10
        w.start()
        wait_for(lambda: _cosigned_size(a, a_note, w_vkey) == 50, timeout=90)
    finally:
        a.stop()
        w.stop()


def test_bad_witness_configuration_is_a_named_error(tmp_path: Path) -> None:
    srv = ServerProcess(
        tmp_path / "data",
        env={"SCITT_OCI_WITNESSES": json.dumps([{"url": "http://127.0.0.1:1", "vkey": "x+00000000+AQ=="}])},
    )
    with pytest.raises(RuntimeError, match=r"witnesses\[0\].vkey"):
        srv.start()
    srv2 = ServerProcess(tmp_path / "data2", env={"SCITT_OCI_WITNESS_QUORUM": "2"})
    with pytest.raises(RuntimeError, match="witness_quorum 2 is more than the 0 witnesses"):
        srv2.start()


def _scitt(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "scitt_oci", *args], capture_output=True, text=True, timeout=120)


def _audit_and_mirror_with_policies(tmp_path: Path, a: ServerProcess, a_note: str, w_vkey: str) -> None:
    other = note.Verifier(
        "w2.test/witness", note.COSIGNATURE_V1, ed25519.Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    )
    met = tmp_path / "met.policy"
    met.write_text(f"log {a_note}\nwitness W {w_vkey}\nquorum W\n")
    unmet = tmp_path / "unmet.policy"
    unmet.write_text(f"log {a_note}\nwitness W {w_vkey}\nwitness W2 {other.vkey}\ngroup both all W W2\nquorum both\n")
    ok = _scitt("log", "audit", "--ts", a.url, "--state", str(tmp_path / "audit.json"), "--witness-policy", str(met))
    assert ok.returncode == 0 and "witnessed: size 10 cosigned by w.test/witness" in ok.stdout, ok.stdout + ok.stderr
    refused = _scitt(
        "log", "audit", "--ts", a.url, "--state", str(tmp_path / "audit2.json"), "--witness-policy", str(unmet)
    )
    assert refused.returncode == 1 and "below the witness quorum" in refused.stdout, refused.stdout + refused.stderr
    assert not (tmp_path / "audit2.json").exists()
    # The same quorum named in a trust policy's YAML.
    (tmp_path / "ts.pem").write_bytes((a.data_dir / "keys" / "ts.pem").read_bytes())
    yaml_policy = tmp_path / "trust.yaml"
    yaml_policy.write_text(
        "transparency_services:\n  - name: a\n    keys: [{path: ts.pem}]\n"
        f"    tlog: {{vkey: '{a_note}', witnesses: [{{name: w, vkey: '{w_vkey}'}}], quorum: 1}}\n"
    )
    from_yaml = _scitt(
        "log", "audit", "--ts", a.url, "--state", str(tmp_path / "audit3.json"), "--witness-policy", str(yaml_policy)
    )
    assert from_yaml.returncode == 0 and "witnessed: size 10" in from_yaml.stdout, from_yaml.stdout + from_yaml.stderr
    mirrored = _scitt(
        "mirror", a.url, "--vkey", a_note, "--data-dir", str(tmp_path / "m-met"), "--once", "--policy", str(met)
    )
    assert mirrored.returncode == 0, mirrored.stderr
    below = _scitt(
        "mirror", a.url, "--vkey", a_note, "--data-dir", str(tmp_path / "m-unmet"), "--once", "--policy", str(unmet)
    )
    assert below.returncode == 2 and "below the witness quorum" in below.stderr, below.stderr
