"""Every RFC 6962/9162 known-answer case in ../shared/testdata/merkle (transparency-dev), positive and negative."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from scitt_oci.errors import ProofError
from scitt_oci.scitt import merkle
from tests.conftest import SHARED_TESTDATA, shared, shared_files

INCLUSION = shared_files("merkle", "inclusion")
CONSISTENCY = shared_files("merkle", "consistency")


def _b64(value: str | None) -> bytes:
    return base64.b64decode(value) if value else b""


def _ids(paths: list[Path]) -> list[str]:
    return [str(p.relative_to(SHARED_TESTDATA)) for p in paths]


def test_vector_sets_are_present() -> None:
    shared("merkle")
    assert len(INCLUSION) > 50 and len(CONSISTENCY) > 50


@pytest.mark.parametrize("path", INCLUSION, ids=_ids(INCLUSION))
def test_inclusion_vector(path: Path) -> None:
    case = json.loads(path.read_text())
    proof = [_b64(p) for p in case["proof"] or []]
    args = (_b64(case["leafHash"]), case["leafIdx"], case["treeSize"], proof, _b64(case["root"]))
    if case["wantErr"]:
        with pytest.raises(ProofError):
            merkle.verify_inclusion(*args)
    else:
        merkle.verify_inclusion(*args)


@pytest.mark.parametrize("path", CONSISTENCY, ids=_ids(CONSISTENCY))
def test_consistency_vector(path: Path) -> None:
    case = json.loads(path.read_text())
    proof = [_b64(p) for p in case["proof"] or []]
    args = (case["size1"], case["size2"], proof, _b64(case["root1"]), _b64(case["root2"]))
    if case["wantErr"]:
        with pytest.raises(ProofError):
            merkle.verify_consistency(*args)
    else:
        merkle.verify_consistency(*args)
