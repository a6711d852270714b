"""The six cross-implementation vectors of ../shared/testdata/scitt-cose-vectors/v1, through the library and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from scitt_oci.verify.trust import load_policy
from scitt_oci.verify.verifier import verify_transparent_statement
from tests.conftest import SHARED_TESTDATA, shared

VECTORS = [
    "valid-eddsa",
    "valid-es256",
    "valid-ccf-vds2",
    "fail-tampered-path",
    "fail-unsupported-vds",
    "fail-bad-statement-sig",
]


def _policy(tmp_path: Path, vector: Path) -> Path:
    """A trust policy naming the vector's log key, and its issuer key (the CCF vector's issuer is its x5chain)."""
    lines = ["transparency_services:", "  - name: vector-log", "    keys:", f"      - path: {vector / 'log-key.pub'}"]
    if vector.name != "valid-ccf-vds2":
        lines += ["issuers:", "  - name: vector-issuer", "    keys:", f"      - path: {vector / 'issuer-key.pub'}"]
    path = tmp_path / "policy.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_all_six_vectors_are_present() -> None:
    found = sorted(p.name for p in shared("scitt-cose-vectors", "v1").iterdir() if p.is_dir())
    assert found == sorted(VECTORS)


@pytest.mark.parametrize("name", VECTORS)
def test_vector_through_the_library(name: str, tmp_path: Path) -> None:
    vector = shared("scitt-cose-vectors", "v1", name)
    expected = json.loads((vector / "expected.json").read_text())
    result = verify_transparent_statement(
        (vector / "statement.cose").read_bytes(),
        load_policy(_policy(tmp_path, vector)),
        detached_receipts=[(vector / "receipt.cose").read_bytes()],
    )
    assert result.decision == expected["result"], result.to_json()
    [r] = result.receipts
    assert r.valid is expected["receipt_valid"]
    if expected["result"] == "INVALID":
        assert expected["failure_code"] in result.reason_codes
        assert len(set(result.reason_codes)) == 1, "each negative vector isolates exactly one failure"
    if expected["receipt_valid"]:
        assert r.root == expected["reconstructed_root"]
        assert (r.tree_size, r.leaf_index) == (expected["tree_size"], expected["leaf_index"])
        assert r.entry_rule == ("ccf" if r.vds == 2 else "hash-first")


@pytest.mark.parametrize("name", VECTORS)
def test_vector_through_the_cli(name: str, tmp_path: Path) -> None:
    vector = shared("scitt-cose-vectors", "v1", name)
    expected = json.loads((vector / "expected.json").read_text())
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "scitt_oci",
            "verify",
            "--statement",
            str(vector / "statement.cose"),
            "--receipt",
            str(vector / "receipt.cose"),
            "--trust",
            str(_policy(tmp_path, vector)),
            "--output",
            "json",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    report = json.loads(proc.stdout)
    assert report["decision"] == expected["result"]
    assert proc.returncode == (0 if expected["result"] == "VALID" else 1)
    if expected["result"] == "INVALID":
        assert expected["failure_code"] in [r["code"] for r in report["reasons"]]
    assert str(SHARED_TESTDATA) not in proc.stderr
