"""`scitt-oci log audit` in process: the face prints the auditor's result and sets the exit code; the
service is a loopback server answering what a log (built from the real receipt code) would."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from scitt_oci.cli import main
from scitt_oci.cose import keys
from tests.helpers import key
from tests.unit.scrapi.scripted import Reply, Scripted
from tests.unit.scrapi.test_audit import Ledger, _entries


@pytest.fixture
def service() -> Iterator[Scripted]:
    server = Scripted()
    yield server
    server.close()


def _audit(service: Scripted, state: Path, *extra: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["log", "audit", "--ts", service.url, "--state", str(state), *extra])
    return result.exit_code, result.output


def test_first_consistent_and_forked_audits(service: Scripted, tmp_path: Path) -> None:
    log = Ledger(key(), _entries("a", "b", "c"))
    state = tmp_path / "audit.json"
    service.replies.put(Reply(200, keys.dump_cose_key_set(log.keys())))
    service.replies.put(Reply(200, log.checkpoint()))
    code, out = _audit(service, state)
    assert code == 0, out
    assert f"pinning 1 service key(s) on first use: {key().kid.hex()}" in out and "first audit: 3 entries" in out
    saved = json.loads(state.read_text())
    assert saved["tree_size"] == 3 and saved["checkpoint"] and saved["keys"]
    log.entries += _entries("d")
    service.replies.put(Reply(200, log.checkpoint()))
    service.replies.put(Reply(200, log.consistency(3, 4)))
    code, out = _audit(service, state)
    assert code == 0 and "consistent: 3 -> 4 entries" in out, out
    before = state.read_text()
    log.entries = _entries("x", "b", "c", "d", "e")  # another history
    service.replies.put(Reply(200, log.checkpoint()))
    service.replies.put(Reply(200, log.consistency(4, 5)))
    code, out = _audit(service, state, "--evidence", str(tmp_path / "kept"))
    assert code == 1, out
    assert "INCONSISTENT: the consistency proof does not lead to a root the service signed (INCONSISTENT_LOG)" in out
    assert f"evidence kept in {tmp_path / 'kept'}" in out
    assert state.read_text() == before  # the last accepted head stays
    summary = json.loads((tmp_path / "kept" / "evidence.json").read_text())
    assert (summary["old"]["tree_size"], summary["new"]["tree_size"], summary["reason"]) == (4, 5, "INCONSISTENT_LOG")
    # Without --evidence the folder goes beside the state file.
    log.entries = log.entries[:2]
    service.replies.put(Reply(200, log.checkpoint()))
    code, out = _audit(service, state)
    assert code == 1 and "the log shrank from 4 to 2 entries (LOG_SHRANK)" in out, out
    [beside] = tmp_path.glob("audit.json.evidence-*")
    assert json.loads((beside / "evidence.json").read_text())["reason"] == "LOG_SHRANK"


def test_errors_exit_2_and_save_nothing(service: Scripted, tmp_path: Path) -> None:
    log = Ledger(key(), _entries("a"))
    state = tmp_path / "audit.json"
    service.replies.put(Reply(200, keys.dump_cose_key_set(log.keys())))
    service.replies.put(Reply(200, log.checkpoint()))
    assert _audit(service, state)[0] == 0
    before = state.read_text()
    log.signing_key = key(slot=1)  # the service now signs with a key never pinned
    service.replies.put(Reply(200, log.checkpoint()))
    code, out = _audit(service, state)
    assert code == 2 and "which is not pinned in the audit state" in out, out
    assert state.read_text() == before
    other = CliRunner().invoke(main, ["log", "audit", "--ts", "http://other.example", "--state", str(state)])
    assert other.exit_code == 2 and f"records audits of '{service.url}', not 'http://other.example'" in other.output
    state.write_text("{not json")
    code, out = _audit(service, state)
    assert code == 2 and "cannot read audit state" in out, out


def _shrinking(service: Scripted, state: Path) -> Ledger:
    """An audit accepted at 3 entries; the service then signs a tree of 2, a second later."""
    log = Ledger(key(), _entries("a", "b", "c"))
    service.replies.put(Reply(200, keys.dump_cose_key_set(log.keys())))
    service.replies.put(Reply(200, log.checkpoint()))
    assert _audit(service, state)[0] == 0
    service.requests()
    log.entries = log.entries[:2]
    return log


def test_an_evidence_folder_in_use_is_refused_before_the_service_is_asked(service: Scripted, tmp_path: Path) -> None:
    state = tmp_path / "audit.json"
    _shrinking(service, state)
    (tmp_path / "ev").mkdir()
    (tmp_path / "ev" / "evidence.json").write_text("earlier evidence\n")
    code, out = _audit(service, state, "--evidence", str(tmp_path / "ev"))
    assert code == 2 and f"--evidence {tmp_path / 'ev'} is not an empty folder: evidence is never overwritten" in out
    assert service.requests() == [] and (tmp_path / "ev" / "evidence.json").read_text() == "earlier evidence\n"


def test_paths_that_cannot_be_written_exit_2_naming_them(service: Scripted, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    log = _shrinking(service, tmp_path / "audit.json")
    service.replies.put(Reply(200, log.checkpoint()))
    code, out = _audit(service, tmp_path / "audit.json", "--evidence", "/proc/ev")
    assert code == 2, out
    assert (
        "error: the log is INCONSISTENT (LOG_SHRANK: the log shrank from 3 to 2 entries), but cannot write the "
        "evidence to /proc/ev: " in out
    ), out
    for state in ("/proc/s.json", str(tmp_path / "file" / "s.json")):
        service.replies.put(Reply(200, keys.dump_cose_key_set(log.keys())))
        service.replies.put(Reply(200, log.checkpoint()))
        result = CliRunner().invoke(main, ["log", "audit", "--ts", service.url, "--state", state])
        assert result.exit_code == 2 and f"error: cannot write the audit state {state}: " in result.output, (
            result.output
        )
        assert result.exception is None or isinstance(result.exception, SystemExit)


def test_a_stale_checkpoint_exits_2_without_evidence(service: Scripted, tmp_path: Path) -> None:
    state = tmp_path / "audit.json"
    log = Ledger(key(), _entries("a", "b", "c"))
    service.replies.put(Reply(200, keys.dump_cose_key_set(log.keys())))
    old = log.checkpoint()
    service.replies.put(Reply(200, old))
    assert _audit(service, state)[0] == 0
    log.entries += _entries("d")
    service.replies.put(Reply(200, log.checkpoint()))
    service.replies.put(Reply(200, log.consistency(3, 4)))
    assert _audit(service, state)[0] == 0
    before = state.read_text()
    service.replies.put(Reply(200, old))  # the size-3 head again, from a cache or a replay
    code, out = _audit(service, state)
    assert code == 2 and "error: stale checkpoint: the service answered with 3 entries, fewer than the 4" in out, out
    assert "INCONSISTENT" not in out and state.read_text() == before
    assert list(tmp_path.glob("audit.json.evidence-*")) == []


def test_the_timeout_is_said_to_be_per_call() -> None:
    out = CliRunner().invoke(main, ["log", "audit", "--help"]).output
    assert "Seconds for each call to the service" in " ".join(out.split())
    assert "not for the whole audit" in " ".join(out.split())
