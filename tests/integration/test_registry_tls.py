"""TLS to a registry: verified against the configured CA file, refused without it."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from scitt_oci.oci import manifest as mf
from scitt_oci.oci.client import RegistryClient, RegistryError, RegistrySettings
from tests.helpers import cli
from tests.pki import make_pki
from tests.registryproc import RegistryProcess, oci_layout, skopeo_push
from tests.serverproc import ServerProcess


def test_tls_registry_is_verified_against_the_configured_ca(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    ca, cert, key = pki.ca, pki.server_cert, pki.server_key
    registry = RegistryProcess(tmp_path / "registry", tls=(cert, key)).start()
    try:
        trusted = RegistryClient(RegistrySettings.for_url(registry.url, ca_file=str(ca)))
        digest = trusted.push_blob("app", b"hello over tls")
        assert trusted.blob("app", digest) == b"hello over tls"
        untrusted = RegistryClient(RegistrySettings.for_url(registry.url, attempts=1))
        with pytest.raises(RegistryError, match="TLS certificate of .* is not trusted .*give the CA"):
            untrusted.blob("app", digest)
    finally:
        registry.stop()


def test_credentials_never_go_to_a_plain_http_token_realm(tmp_path: Path) -> None:
    """A TLS registry whose token realm is http:// (or scheme-less): the Basic password would cross the
    network in clear text. The realm, a loopback double, must never be asked."""
    import http.server
    import threading

    from tests.serverproc import free_port

    hits: list[tuple[str, str | None]] = []

    class Realm(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            hits.append((self.path, self.headers.get("Authorization")))
            body = b'{"token": "not-a-real-token"}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    realm_port = free_port()
    realm = http.server.ThreadingHTTPServer(("127.0.0.1", realm_port), Realm)
    threading.Thread(target=realm.serve_forever, daemon=True).start()
    pki = make_pki(tmp_path / "pki")
    ca, cert, key = pki.ca, pki.server_cert, pki.server_key
    try:
        for n, url in enumerate((f"http://127.0.0.1:{realm_port}/token", f"//127.0.0.1:{realm_port}/token")):
            auth = f"auth: {{token: {{realm: '{url}', service: test, issuer: test, rootcertbundle: {ca}}}}}"
            registry = RegistryProcess(tmp_path / f"registry{n}", tls=(cert, key), extra=auth).start()
            try:
                client = RegistryClient(
                    RegistrySettings.for_url(
                        registry.url,
                        ca_file=str(ca),
                        username="ci",
                        password="the-registry-password",
                        auth_hosts=(f"127.0.0.1:{realm_port}",),
                        attempts=2,
                    )
                )
                with pytest.raises(RegistryError, match="plain HTTP|not an absolute"):
                    client.blob("app", "sha256:" + "ab" * 32)
            finally:
                registry.stop()
        assert hits == []
    finally:
        realm.shutdown()


def test_an_http_location_from_an_https_registry_is_refused() -> None:
    client = RegistryClient(RegistrySettings.for_url("https://127.0.0.1:9"))
    with pytest.raises(RegistryError, match="no scheme downgrade"):
        client.request("PUT", "http://127.0.0.1:9/v2/app/blobs/uploads/x?digest=sha256:00")


def test_verify_and_history_reach_a_private_ca_registry_with_ca_file(tmp_path: Path) -> None:
    """A registry whose certificate a private CA signed: `serve` watches it with `ca_file`; `history` and
    `verify IMAGE` refuse it without `--ca-file` (naming the option) and read it with `--ca-file`."""
    pki = make_pki(tmp_path / "pki")
    ca, cert, key = pki.ca, pki.server_cert, pki.server_key
    secret = "tls-registry-webhook-secret-0123"
    server = ServerProcess(tmp_path / "data")
    registry = RegistryProcess(
        tmp_path / "registry", tls=(cert, key), secret=secret, notify_url=f"{server.url}/webhooks/distribution"
    ).start()
    (tmp_path / "secret").write_text(secret)
    (tmp_path / "config.yaml").write_text(
        f"watch: {{registries: [{{url: {registry.host}, ca_file: {ca}}}], webhook_secret_file: {tmp_path / 'secret'}}}\n"
    )
    server.args = ["--config", str(tmp_path / "config.yaml")]
    server.start()
    try:
        digest = oci_layout(tmp_path / "image", "private-ca")
        skopeo_push(tmp_path / "image", registry, "acme/app")
        trusted = RegistryClient(RegistrySettings.for_url(registry.url, ca_file=str(ca)))
        deadline = time.monotonic() + 30
        while not trusted.referrers("acme/app", digest, mf.STATEMENT_ARTIFACT):
            assert time.monotonic() < deadline, server.output()[-3000:]
            time.sleep(0.05)  # recorded asynchronously: polled, bounded
        assert cli("trust", "pin", server.url, "--policy", "p.yaml", cwd=tmp_path).returncode == 0
        image = f"{registry.host}/acme/app@{digest}"

        for command in (["history", image], ["verify", image, "--trust", "p.yaml"]):
            refused = cli(*command, cwd=tmp_path)
            assert refused.returncode == 2 and "is not trusted" in refused.stderr, refused.stderr
            assert "--ca-file" in refused.stderr and "SSL_CERT_FILE" not in refused.stderr
            assert "Traceback" not in refused.stderr
        shown = cli("history", image, "--ca-file", str(ca), cwd=tmp_path)
        assert shown.returncode == 0 and " push " in shown.stdout, shown.stderr
        admitted = cli("verify", image, "--trust", "p.yaml", "--ca-file", str(ca), cwd=tmp_path)
        assert admitted.returncode == 0 and admitted.stdout.startswith("ADMIT"), admitted.stdout + admitted.stderr

        (tmp_path / "not-a-ca.pem").write_text("not a certificate\n")
        for command in (["history", image], ["verify", image, "--trust", "p.yaml"]):
            bad = cli(*command, "--ca-file", "not-a-ca.pem", cwd=tmp_path)
            assert bad.returncode == 2 and "--ca-file not-a-ca.pem: not a usable PEM" in bad.stderr, bad.stderr
            both = cli(*command, "--ca-file", str(ca), "--registry-insecure", cwd=tmp_path)
            assert both.returncode == 2 and "give one of them" in both.stderr, both.stderr
            assert "Traceback" not in bad.stderr + both.stderr
    finally:
        server.stop()
        registry.stop()
