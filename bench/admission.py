"""Admission benchmark: cold `scitt-oci verify IMAGE@DIGEST` wall time beside the `python -c pass`
floor, and admission requests per second with p50/p99 latency for cached and uncached digests.

Run: .venv/bin/python bench/admission.py        (needs docker-registry and skopeo; wrk for the cached figures)
Each admission figure is taken twice: on the main listener (plain HTTP, no client authentication) and
on the admission listener (`admission.listen`: TLS, the client authenticated by a bearer token).
Goals (issue #5): cold verify <= 4x the start-up floor; cached >= 2,000 requests/s with p99 <= 5 ms;
uncached p99 <= 50 ms on loopback.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scitt_oci.oci import manifest as mf
from scitt_oci.oci.client import RegistryClient, RegistrySettings
from tests.pki import make_pki
from tests.registryproc import RegistryProcess, oci_layout, skopeo_push
from tests.serverproc import ServerProcess, free_port, placeholder_keys, service_keys

HERE = Path(__file__).resolve().parent


def wall(cmd: list[str], runs: int = 15) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=False)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def review(image: str) -> bytes:
    return json.dumps(
        {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "u",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "namespace": "prod",
                "operation": "CREATE",
                "object": {"spec": {"containers": [{"name": "c", "image": image}]}},
            },
        }
    ).encode()


TOKEN = "bench-api-server-token-0123456789"


class Target:
    """Where admission requests go: the main listener, or the admission listener over TLS with a token."""

    def __init__(self, root: Path, listener: bool) -> None:
        self.listener = listener
        self.env: dict[str, str] = {}
        self.headers = {"Content-Type": "application/json"}
        self.verify: str | bool = True
        if listener:
            pki = make_pki(root / "pki")
            (root / "token").write_text(TOKEN)
            self.port = free_port()
            self.env = {
                "SCITT_OCI_ADMISSION__LISTEN": f"127.0.0.1:{self.port}",
                "SCITT_OCI_ADMISSION__TLS_CERT": str(pki.server_cert),
                "SCITT_OCI_ADMISSION__TLS_KEY": str(pki.server_key),
                "SCITT_OCI_ADMISSION__TOKEN_FILES": json.dumps([str(root / "token")]),
            }
            self.headers["Authorization"] = f"Bearer {TOKEN}"
            self.verify = str(pki.ca)

    def url(self, server: ServerProcess) -> str:
        return f"https://127.0.0.1:{self.port}" if self.listener else server.url

    @property
    def label(self) -> str:
        return "admission listener, TLS + token" if self.listener else "main listener, plain HTTP"


def start(root: Path, env: dict[str, str]) -> tuple[ServerProcess, RegistryProcess]:
    secret = "bench-secret-0123456789abcdef"
    (root / "secret").write_text(secret)
    server = ServerProcess(root / "data", env=env)
    registry = RegistryProcess(
        root / "registry", notify_url=f"{server.url}/webhooks/distribution", secret=secret
    ).start()
    placeholder_keys(root)
    (root / "policy.yaml").write_text(
        "transparency_services: [{name: local, keys: [{path: ts.cbor}]}]\n"
        "issuers: [{name: operator, keys: [{path: issuer.pem}]}]\n"
    )
    server.args = [
        "--registry",
        registry.host,
        "--registry-insecure",
        "--webhook-secret-file",
        str(root / "secret"),
        "--trust",
        str(root / "policy.yaml"),
    ]
    server.start()
    service_keys(root, server)
    return server, registry


def recorded_image(root: Path, registry: RegistryProcess, seed: str) -> str:
    digest = oci_layout(root / seed, seed)
    skopeo_push(root / seed, registry, "bench/app", seed)
    client = RegistryClient(RegistrySettings.for_url(registry.url))
    deadline = time.monotonic() + 30
    while not client.referrers("bench/app", digest, mf.STATEMENT_ARTIFACT):
        if time.monotonic() > deadline:
            raise TimeoutError("the image was not recorded")
        time.sleep(0.05)
    return f"{registry.host}/bench/app@{digest}"


def main() -> None:
    for listener in (False, True):
        uncached(listener, cold_verify=not listener)
    for listener in (False, True):
        cached(listener)


def uncached(listener: bool, cold_verify: bool) -> None:
    root = Path(tempfile.mkdtemp())
    target = Target(root, listener)
    server, registry = start(
        root,
        {"SCITT_OCI_ADMISSION__CACHE_SECONDS": "0", "SCITT_OCI_ADMISSION__NEGATIVE_CACHE_SECONDS": "0", **target.env},
    )
    try:
        image = recorded_image(root, registry, "one")
        if cold_verify:
            policy = str(root / "policy.yaml")
            verify = [sys.executable, "-m", "scitt_oci", "verify", image, "--trust", policy, "--registry-insecure"]
            floor = wall([sys.executable, "-c", "pass"])
            cold = wall(verify)
            ok = subprocess.run(verify, capture_output=True, text=True, check=False)
            assert ok.returncode == 0, ok.stdout + ok.stderr
            print(
                f"cold `scitt-oci verify IMAGE@DIGEST`: {cold * 1000:.0f} ms median; `python -c pass`: {floor * 1000:.0f} ms;"
                f" ratio {cold / floor:.1f}x  (goal <= 4x)"
            )
        body = review(image)
        session = requests.Session()
        lat = []
        for _ in range(300):  # uncached: the cache is off, every request reads the registry and verifies
            t = time.perf_counter()
            r = session.post(
                target.url(server) + "/admission/validate",
                data=body,
                headers=target.headers,
                verify=target.verify,
                timeout=10,
            )
            lat.append(time.perf_counter() - t)
            assert r.json()["response"]["allowed"] is True
        lat.sort()
        print(
            f"uncached admission ({target.label}; sequential, n=300): p50 {statistics.median(lat) * 1000:.1f} ms, "
            f"p99 {lat[int(len(lat) * 0.99) - 1] * 1000:.1f} ms, {len(lat) / sum(lat):,.0f} requests/s  (goal p99 <= 50 ms)"
        )
    finally:
        server.stop()
        registry.stop()


def cached(listener: bool) -> None:
    root = Path(tempfile.mkdtemp())
    target = Target(root, listener)
    server, registry = start(root, target.env)
    try:
        image = recorded_image(root, registry, "two")
        (root / "review.json").write_bytes(review(image))
        assert (
            requests.post(
                target.url(server) + "/admission/validate",
                data=review(image),
                headers=target.headers,
                verify=target.verify,
                timeout=10,
            ).json()["response"]["allowed"]
            is True
        )
        if shutil.which("wrk") is None:
            print("cached admission: skipped (install wrk)")
            return
        for connections in (2, 4, 16):
            out = subprocess.run(
                ["wrk", "-t2", f"-c{connections}", "-d6s", "-s", str(HERE / "admission.lua"), target.url(server)],
                capture_output=True,
                text=True,
                check=True,
                env={
                    **os.environ,
                    "SCITT_BENCH_BODY": str(root / "review.json"),
                    "SCITT_BENCH_TOKEN": TOKEN if listener else "",
                },
            ).stdout
            rate = float(next(line.split()[1] for line in out.splitlines() if line.startswith("Requests/sec")))
            p50 = int(next(line.split()[1] for line in out.splitlines() if line.startswith("latency_p50_us"))) / 1000
            p99 = int(next(line.split()[1] for line in out.splitlines() if line.startswith("latency_p99_us"))) / 1000
            errors = next(line.split()[1] for line in out.splitlines() if line.startswith("errors"))
            print(
                f"cached admission ({target.label}; wrk, {connections} connections): {rate:,.0f} requests/s, p50 {p50:.1f} ms, "
                f"p99 {p99:.1f} ms, errors {errors}  (goals >= 2,000/s, p99 <= 5 ms)"
            )
    finally:
        server.stop()
        registry.stop()


if __name__ == "__main__":
    main()
