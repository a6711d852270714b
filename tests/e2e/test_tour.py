"""The README's tour, end to end through the command line against a running service."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import requests

from tests.serverproc import ServerProcess

IMAGE = "sha256:5d8ae6143394fc080642b6caef7c25047c159df2874f0a71adef5c480be0d2f0"


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "scitt_oci", *args], capture_output=True, text=True, cwd=cwd, check=False)


def test_statement_register_verify_audit(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "data").start()
    try:
        issuer_key = str(srv.data_dir / "keys" / "issuer.pem")
        made = cli("statement", "create", "--key", issuer_key, "--issuer", "https://wabbit-networks.example",
                   "--subject", f"oci://registry.example/net-monitor@{IMAGE}", "--digest", IMAGE,
                   "--media-type", "application/vnd.oci.image.manifest.v1+json", "--out", "push.cose", cwd=tmp_path)
        assert made.returncode == 0, made.stderr
        reg = cli("register", "push.cose", "--ts", srv.url, "--out", "push.scitt", cwd=tmp_path)
        assert reg.returncode == 0 and "registered: leaf index 0 (unsigned, from the proof) of tree size 1 (signed)" in reg.stdout, reg.stderr
        (tmp_path / "ts-keys.cbor").write_bytes(requests.get(srv.url + "/.well-known/scitt-keys", timeout=5).content)
        assert cli("keys", "export", issuer_key, "--format", "pem", "--out", "issuer.pub", cwd=tmp_path).returncode == 0
        (tmp_path / "policy.yaml").write_text(
            "transparency_services: [{name: local, keys: [{path: ts-keys.cbor}]}]\n"
            "issuers: [{name: wabbit, keys: [{path: issuer.pub}], iss: 'https://wabbit-networks.example'}]\n"
        )
        ok = cli("verify", "--statement", "push.scitt", "--trust", "policy.yaml", "--output", "json", cwd=tmp_path)
        report = json.loads(ok.stdout)
        assert ok.returncode == 0 and report["decision"] == "VALID"
        assert report["receipts"][0]["service"] == "local" and report["statement"]["trusted_issuer"] == "wabbit"
        first = cli("log", "audit", "--ts", srv.url, "--state", "audit.json", cwd=tmp_path)
        assert first.returncode == 0 and "first audit: 1 entries" in first.stdout
        cli("statement", "create", "--key", issuer_key, "--issuer", "https://wabbit-networks.example",
            "--subject", "urn:second", "--digest", "sha256:" + "1" * 64, "--out", "second.cose", cwd=tmp_path)
        assert cli("register", "second.cose", "--ts", srv.url, cwd=tmp_path).returncode == 0
        second = cli("log", "audit", "--ts", srv.url, "--state", "audit.json", cwd=tmp_path)
        assert second.returncode == 0 and "consistent: 1 -> 2 entries" in second.stdout
        state = json.loads((tmp_path / "audit.json").read_text())
        assert state["tree_size"] == 2 and state["keys"]
    finally:
        srv.stop()


def test_audit_detects_a_rewritten_log(tmp_path: Path) -> None:
    """An auditor that saw one log, then talks to a log with a different history, says so and keeps its state."""
    a = ServerProcess(tmp_path / "a").start()
    try:
        issuer = str(a.data_dir / "keys" / "issuer.pem")
        for name, digest in (("x", "2" * 64), ("y", "3" * 64)):
            cli("statement", "create", "--key", issuer, "--issuer", "https://w", "--subject", f"urn:{name}",
                "--digest", f"sha256:{digest}", "--out", f"{name}.cose", cwd=tmp_path)
        assert cli("register", "x.cose", "--ts", a.url, cwd=tmp_path).returncode == 0
        assert cli("log", "audit", "--ts", a.url, "--state", "audit.json", cwd=tmp_path).returncode == 0
    finally:
        a.stop()
    # The same service identity and key, but its database replaced by one with another first entry.
    (a.data_dir / "log.db").unlink()
    for suffix in ("-wal", "-shm"):
        (a.data_dir / f"log.db{suffix}").unlink(missing_ok=True)
    b = ServerProcess(a.data_dir, port=a.port).start()
    try:
        assert cli("register", "y.cose", "--ts", b.url, cwd=tmp_path).returncode == 0
        assert cli("register", "x.cose", "--ts", b.url, cwd=tmp_path).returncode == 0
        before = (tmp_path / "audit.json").read_text()
        audit = cli("log", "audit", "--ts", b.url, "--state", "audit.json", cwd=tmp_path)
        assert audit.returncode == 1 and "INCONSISTENT" in audit.stdout
        assert (tmp_path / "audit.json").read_text() == before
    finally:
        b.stop()
