"""Signed tree sizes at the CLI: `log audit` refuses a history that never existed, and `verify` says
which of a receipt's numbers its signature covers."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from scitt_oci.cli import main
from scitt_oci.cose import cbor, headers, keys
from scitt_oci.cose.sign1 import Sign1
from scitt_oci.scitt import merkle, receipt, statement, transparent
from tests.helpers import MemoryLog, key
from tests.hostileserver import HostileServer

COSE = "application/cose"


def _log(n: int) -> MemoryLog:
    log = MemoryLog(key(slot=5))
    for i in range(n):
        log.add(statement.build(key(), issuer="https://w.example", subject=f"urn:{i}", payload=b"%d" % i))
    return log


def _audit(url: str, state: Path) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["log", "audit", "--ts", url, "--state", str(state)])
    return result.exit_code, result.output


def _state_at_4(url: str, log: MemoryLog, path: Path) -> Path:
    path.write_text(
        json.dumps({"ts": url, "tree_size": 4, "root": log.head(4).root.hex(), "keys": [log.signing_key.to_jwk()]})
    )
    return path


def test_log_audit_refuses_the_honest_4_to_6_proof_presented_as_4_to_7(tmp_path: Path) -> None:
    log = _log(6)
    sth6 = log.head(6)
    path46 = merkle.consistency_path(4, 6, merkle.list_hasher(log.leaves()))
    as_4_to_7 = sth6.message({headers.VDP: {headers.VDP_CONSISTENCY: [cbor.dumps([4, 7, path46])]}}).encode()
    honest_checkpoint = receipt.checkpoint_bytes(sth6)
    # The size-6 head with "7" beside the signature, where the size used to be.
    claims_7 = Sign1(sth6.protected_bytes, sth6.message({}).protected, {"tree_size": 7}, sth6.root, sth6.signature)
    keyset = (200, "application/cbor", keys.dump_cose_key_set([log.signing_key]))

    for checkpoint in (claims_7.encode(), honest_checkpoint):
        routes = {
            "GET /.well-known/scitt-keys": keyset,
            "GET /checkpoint": (200, COSE, checkpoint),
            "GET /consistency": (200, COSE, as_4_to_7),
        }
        with HostileServer(routes) as ts:
            state = _state_at_4(ts.url, log, tmp_path / "audit.json")
            code, output = _audit(ts.url, state)
        assert code in (1, 2) and "consistent: 4 -> 7" not in output, output
        assert json.loads(state.read_text())["tree_size"] == 4  # nothing recorded
    assert "claims tree size 7, but the service signed tree size 6" in output

    # The same service telling the truth is consistent: the test's setup is sound.
    routes = {
        "GET /.well-known/scitt-keys": keyset,
        "GET /checkpoint": (200, COSE, honest_checkpoint),
        "GET /consistency": (200, COSE, receipt.consistency_receipt(sth6, 4, path46)),
    }
    with HostileServer(routes) as ts:
        state = _state_at_4(ts.url, log, tmp_path / "audit.json")
        code, output = _audit(ts.url, state)
    assert code == 0 and f"consistent: 4 -> 6 entries, root {sth6.root.hex()}" in output
    assert json.loads(state.read_text())["tree_size"] == 6


def test_verify_labels_what_a_receipt_signs(tmp_path: Path) -> None:
    log = _log(0)
    s = statement.build(key(), issuer="https://w.example", subject="urn:x", payload=b"x")
    index = log.add(s)
    log.add(statement.build(key(), issuer="https://w.example", subject="urn:y", payload=b"y"))
    (tmp_path / "ts.pem").write_bytes(log.signing_key.public_pem())
    (tmp_path / "issuer.pem").write_bytes(key().public_pem())
    policy = tmp_path / "p.yaml"
    policy.write_text(
        f"transparency_services: [{{name: t, keys: [{{path: {tmp_path / 'ts.pem'}}}]}}]\n"
        f"issuers: [{{name: w, keys: [{{path: {tmp_path / 'issuer.pem'}}}]}}]\n"
    )
    ts_file = tmp_path / "s.scitt"
    ts_file.write_bytes(transparent.add_receipts(s, [log.receipt(index)]))
    result = CliRunner().invoke(main, ["verify", "--statement", str(ts_file), "--trust", str(policy)])
    assert result.exit_code == 0, result.output
    assert "leaf index 0 (unsigned, from the proof), tree size 2 (signed)" in result.output
    as_json = CliRunner().invoke(
        main, ["verify", "--statement", str(ts_file), "--trust", str(policy), "--output", "json"]
    )
    [r] = json.loads(as_json.output)["receipts"]
    assert (r["leaf_index"], r["tree_size"], r["tree_size_signed"]) == (0, 2, True)
