"""A registry behind a corporate proxy: reachable only through it (its name resolves nowhere but in the
proxy), over a CONNECT tunnel for HTTPS; the watcher, `scitt-oci verify` and `trust pin` all go through
HTTPS_PROXY / HTTP_PROXY, and NO_PROXY bypasses it."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from scitt_oci.cose import keys
from scitt_oci.oci.client import RegistryClient, RegistrySettings
from tests.helpers import cli
from tests.loopproxy import LoopProxy
from tests.pki import make_pki
from tests.registryproc import RegistryProcess, oci_layout, skopeo_push, wait_statements
from tests.serverproc import ServerProcess, placeholder_keys

SECRET = "proxy-test-secret-0123456789abcdef"
NAME = "registry.proxied.test"
# What this machine's environment may already set, cleared so that each test says what it uses.
_NETWORK_SETTINGS = {
    "HTTPS_PROXY",
    "HTTP_PROXY",
    "ALL_PROXY",
    "NO_PROXY",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
}


@dataclass
class Corp:
    root: Path
    proxy: LoopProxy
    registry: RegistryProcess
    server: ServerProcess
    ca: Path
    recorded: str
    pin: subprocess.CompletedProcess[str]
    pin_requests: int  # absolute-form requests the proxy forwarded to the service during `trust pin`

    @property
    def proxied(self) -> str:
        return f"{NAME}:{self.registry.port}"

    @staticmethod
    def run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        clean = {k: v for k, v in os.environ.items() if k.upper() not in _NETWORK_SETTINGS}
        return cli(*args, env={**clean, **env})

    def verify(self, host: str, *options: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        """`verify` of the recorded image on host under the corp's policy, its report in JSON."""
        image = f"{host}/corp/app@{self.recorded}"
        return self.run(
            "verify", image, "--trust", str(self.root / "policy.yaml"), "--output", "json", *options, env=env
        )


@pytest.fixture(scope="module")
def corp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Corp]:
    root = tmp_path_factory.mktemp("proxy")
    # A CA, and a certificate for NAME (the registry's name behind the proxy) and 127.0.0.1.
    pki = make_pki(root / "pki", "proxy test", server_names=(NAME,))
    ca, cert, key = pki.ca, pki.server_cert, pki.server_key
    (root / "secret").write_text(SECRET)
    with LoopProxy() as proxy:
        # The watcher reaches the registry by its proxied name, trusting its CA through SSL_CERT_FILE.
        cleared = {name: "" for name in _NETWORK_SETTINGS} | {name.lower(): "" for name in _NETWORK_SETTINGS}
        server = ServerProcess(root / "data", env={**cleared, "HTTPS_PROXY": proxy.url, "SSL_CERT_FILE": str(ca)})
        registry = RegistryProcess(
            root / "registry", notify_url=f"{server.url}/webhooks/distribution", secret=SECRET, tls=(cert, key)
        ).start()
        placeholder_keys(root)
        (root / "policy.yaml").write_text(
            "transparency_services: [{name: local, keys: [{path: ts.cbor}]}]\n"
            "issuers: [{name: operator, keys: [{path: issuer.pem}]}]\n"
        )
        server.args = [
            "--registry",
            f"{NAME}:{registry.port}",
            "--webhook-secret-file",
            str(root / "secret"),
            "--trust",
            str(root / "policy.yaml"),
        ]
        server.start()
        try:
            issuer = keys.load_private_pem((server.data_dir / "keys" / "issuer.pem").read_bytes())
            (root / "issuer.pem").write_bytes(issuer.public_pem())
            image = oci_layout(root / "img", "behind-proxy")
            skopeo_push(root / "img", registry, "corp/app", "v1")
            direct = RegistryClient(RegistrySettings.for_url(registry.url, ca_file=str(ca)))
            # The watcher records it asynchronously (through the proxy): wait for its referrer, bounded.
            wait_statements(direct, "corp/app", image, timeout=40, output=server.output)
            # `trust pin` of the service by a name only the proxy resolves: plain HTTP, absolute-form requests.
            ts = f"http://ts.proxied.test:{server.url.rsplit(':', 1)[1]}"
            env = {"HTTP_PROXY": proxy.url}
            pin = Corp.run("trust", "pin", ts, "--out", str(root / "ts.cbor"), env=env)
            yield Corp(root, proxy, registry, server, ca, image, pin, proxy.seen["forwarded"]["ts.proxied.test"])
        finally:
            server.stop()
            registry.stop()


def test_the_watcher_reaches_the_registry_through_the_proxy(corp: Corp) -> None:
    # Only the proxy knows where the registry's name leads: the referrer exists, so the watcher's
    # registry calls went through CONNECT tunnels it opened.
    assert corp.proxy.seen["tunnels"][NAME] >= 1


def test_trust_pin_through_the_proxy(corp: Corp) -> None:
    assert corp.pin.returncode == 0 and "receipt key" in corp.pin.stdout, corp.pin.stderr
    assert corp.pin_requests >= 1  # the name resolves nowhere else: the proxy carried the calls


def test_verify_through_the_proxy(corp: Corp) -> None:
    tunnels = corp.proxy.seen["tunnels"][NAME]
    ok = corp.verify(corp.proxied, env={"HTTPS_PROXY": corp.proxy.url, "REQUESTS_CA_BUNDLE": str(corp.ca)})
    assert ok.returncode == 0 and json.loads(ok.stdout)["decision"] == "ADMIT", ok.stdout + ok.stderr
    assert corp.proxy.seen["tunnels"][NAME] > tunnels


def test_no_proxy_bypasses_the_proxy(corp: Corp) -> None:
    tunnels = corp.proxy.seen["tunnels"][NAME]
    env = {"HTTPS_PROXY": corp.proxy.url, "NO_PROXY": "localhost,.proxied.test", "REQUESTS_CA_BUNDLE": str(corp.ca)}
    out = corp.verify(corp.proxied, "--timeout", "2", env=env)
    # Direct, the name resolves nowhere: unreachable, and the proxy saw nothing.
    assert out.returncode == 2 and f"cannot resolve {NAME}" in out.stderr and "NO_PROXY" in out.stderr, out.stderr
    assert corp.proxy.seen["tunnels"][NAME] == tunnels
    # The same registry by its loopback address is reached directly, never through the proxy.
    direct = corp.verify(corp.registry.host, "--ca-file", str(corp.ca), env={"HTTPS_PROXY": corp.proxy.url})
    assert direct.returncode == 0 and json.loads(direct.stdout)["decision"] == "ADMIT", direct.stdout + direct.stderr
    assert corp.proxy.seen["tunnels"][NAME] == tunnels
