"""Zero to admit on free ports: serve watching docker-registry, skopeo pushes, `trust pin --policy`, and
`verify` ADMIT; an image pushed while the service is stopped is REJECT until the service is back and
the registry's retried notification is recorded."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import yaml

from tests.registryproc import oci_layout, skopeo_push, watched_registry
from tests.serverproc import ServerProcess

SECRET = "zero-to-admit-webhook-secret-42"


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scitt_oci", *args], capture_output=True, text=True, cwd=cwd, check=False, timeout=60
    )


def verify_until(image: str, cwd: Path, decision: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """`verify` until it prints `decision` (the watcher records asynchronously), bounded by `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        proc = cli("verify", image, "--trust", "p.yaml", "--registry-insecure", cwd=cwd)
        if proc.stdout.startswith(decision) or time.monotonic() > deadline:
            return proc
        time.sleep(0.2)  # polling an asynchronous outcome, bounded by the deadline


def test_push_pin_verify_admit_and_reject_while_stopped(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "data")
    registry = watched_registry(tmp_path, server, SECRET)
    try:
        server.start()
        pinned = cli("trust", "pin", server.url, "--policy", "p.yaml", cwd=tmp_path)
        assert pinned.returncode == 0, pinned.stderr
        doc = yaml.safe_load((tmp_path / "p.yaml").read_text())
        assert doc["issuers"][0]["iss"] == server.url and doc["transparency_services"][0]["keys"]

        v1 = oci_layout(tmp_path / "v1", "zero-v1")
        skopeo_push(tmp_path / "v1", registry, "net-monitor", "v1")
        admitted = verify_until(f"{registry.host}/net-monitor@{v1}", tmp_path, "ADMIT")
        assert admitted.returncode == 0 and admitted.stdout.startswith("ADMIT"), (
            admitted.stdout + server.output()[-2000:]
        )

        server.stop()
        v2 = oci_layout(tmp_path / "v2", "zero-v2")
        skopeo_push(tmp_path / "v2", registry, "net-monitor", "v2")
        rejected = cli(
            "verify", f"{registry.host}/net-monitor@{v2}", "--trust", "p.yaml", "--registry-insecure", cwd=tmp_path
        )
        assert rejected.returncode == 1 and rejected.stdout.startswith("REJECT") and "NO_STATEMENTS" in rejected.stdout

        # Back up with the same data: the registry's retried notification is recorded; the pin still holds.
        server.start()
        later = verify_until(f"{registry.host}/net-monitor@{v2}", tmp_path, "ADMIT", timeout=60)
        assert later.returncode == 0 and later.stdout.startswith("ADMIT"), later.stdout
    finally:
        server.stop()
        registry.stop()
