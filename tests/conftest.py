"""Shared fixtures: where ../shared/testdata lives, and key material made once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_TESTDATA = Path(os.environ.get("SCITT_OCI_SHARED_TESTDATA", ROOT.parent / "shared" / "testdata"))


def shared(*parts: str) -> Path:
    """A path under ../shared/testdata, read in place; skips (saying why) where that folder is absent."""
    path = SHARED_TESTDATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent: the shared test vectors exist only inside the scitt-oci workspace")
    return path


def shared_files(*parts: str, pattern: str = "*.json") -> list[Path]:
    """Files under ../shared/testdata for parametrisation (empty list where absent; the test then skips)."""
    base = SHARED_TESTDATA.joinpath(*parts)
    return sorted(base.rglob(pattern)) if base.exists() else []
