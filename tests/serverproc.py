"""Start `scitt-oci serve` as a real subprocess on a free loopback port, for HTTP tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from scitt_oci.cose import algorithms, keys


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServerProcess:
    data_dir: Path
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    host: str = "127.0.0.1"
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    ca: Path | None = None  # with --tls-cert among args: the CA that signed it (the URL is https)

    @property
    def url(self) -> str:
        return f"{'https' if self.ca else 'http'}://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> ServerProcess:
        env = {**os.environ, **self.env}
        self.log = (self.data_dir.parent / f"server-{self.port}.log").open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "scitt_oci",
                "serve",
                "--data-dir",
                str(self.data_dir),
                "--listen",
                f"{self.host}:{self.port}",
                *self.args,
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:  # readiness polling, not a sleep-as-synchronisation
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}: {self.output()}")
            try:
                if (
                    requests.get(self.url + "/readyz", timeout=1, verify=str(self.ca) if self.ca else True).status_code
                    == 200
                ):
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"server did not become ready: {self.output()}")

    def output(self) -> str:
        return (self.data_dir.parent / f"server-{self.port}.log").read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL the server and any worker processes it started."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


def placeholder_keys(root: Path) -> None:
    """ts.cbor and issuer.pem for a policy that must load before the service has made its keys: fresh
    keys that sign nothing, replaced by `service_keys` once it has started."""
    (root / "ts.cbor").write_bytes(keys.dump_cose_key_set([keys.generate(algorithms.by_name("ES256"))]))
    (root / "issuer.pem").write_bytes(keys.generate(algorithms.by_name("ES256")).public_pem())


def service_keys(root: Path, server: ServerProcess, prefix: str = "") -> None:
    """The started service's receipt keys (as it publishes them) and its issuer's public key, written
    to <prefix>ts.cbor and <prefix>issuer.pem where a policy names them."""
    (root / f"{prefix}ts.cbor").write_bytes(requests.get(server.url + "/.well-known/scitt-keys", timeout=5).content)
    issuer = keys.load_private_pem((server.data_dir / "keys" / "issuer.pem").read_bytes())
    (root / f"{prefix}issuer.pem").write_bytes(issuer.public_pem())
