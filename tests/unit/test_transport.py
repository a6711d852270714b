"""The one HTTP transport: which proxy a URL goes through (HTTPS_PROXY / HTTP_PROXY / NO_PROXY as curl
and requests read them), which CA bundle it trusts, and the one retry policy."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from cryptography import x509

from scitt_oci import transport
from scitt_oci.transport import Backoff, proxy_for

PROXY = "http://proxy.corp:3128"


@pytest.mark.parametrize(
    ("url", "env", "expected"),
    [
        ("https://registry.example.com/v2/", {"HTTPS_PROXY": PROXY}, PROXY),
        ("https://registry.example.com/v2/", {"https_proxy": PROXY, "HTTPS_PROXY": "http://other:1"}, PROXY),
        ("https://registry.example.com/v2/", {"HTTP_PROXY": PROXY}, None),  # http_proxy is for http:// only
        ("http://registry.example.com/v2/", {"HTTP_PROXY": PROXY}, PROXY),
        ("http://registry.example.com/v2/", {"ALL_PROXY": PROXY}, PROXY),
        ("https://registry.example.com/v2/", {"HTTPS_PROXY": "proxy.corp:3128"}, "http://proxy.corp:3128"),
        ("https://registry.example.com/v2/", {}, None),
        # NO_PROXY: the host itself, its subdomains (leading dot optional), never a mere suffix of the name
        ("https://example.com/", {"HTTPS_PROXY": PROXY, "NO_PROXY": "example.com"}, None),
        ("https://r.example.com/", {"HTTPS_PROXY": PROXY, "NO_PROXY": "example.com"}, None),
        ("https://r.example.com/", {"HTTPS_PROXY": PROXY, "NO_PROXY": ".example.com"}, None),
        ("https://badexample.com/", {"HTTPS_PROXY": PROXY, "NO_PROXY": "example.com"}, PROXY),
        ("https://R.Example.COM/", {"HTTPS_PROXY": PROXY, "no_proxy": "other.org, EXAMPLE.com"}, None),
        ("https://r.example.com/", {"HTTPS_PROXY": PROXY, "NO_PROXY": "*"}, None),
        # host:port rules match that port only (443 implied for https)
        ("https://r.example.com/", {"HTTPS_PROXY": PROXY, "NO_PROXY": "r.example.com:443"}, None),
        ("https://r.example.com:5000/", {"HTTPS_PROXY": PROXY, "NO_PROXY": "r.example.com:443"}, PROXY),
        ("https://r.example.com:5000/", {"HTTPS_PROXY": PROXY, "NO_PROXY": "r.example.com:5000"}, None),
        # IP addresses and CIDR blocks
        ("https://10.1.2.3/", {"HTTPS_PROXY": PROXY, "NO_PROXY": "10.0.0.0/8"}, None),
        ("https://192.168.1.1/", {"HTTPS_PROXY": PROXY, "NO_PROXY": "10.0.0.0/8"}, PROXY),
        ("https://[fd00::1]:443/", {"HTTPS_PROXY": PROXY, "NO_PROXY": "fd00::/8"}, None),
        ("https://10.1.2.3/", {"HTTPS_PROXY": PROXY, "NO_PROXY": "example.com"}, PROXY),
        # loopback is never proxied
        ("https://127.0.0.1:5000/", {"HTTPS_PROXY": PROXY}, None),
        ("http://localhost:5000/", {"HTTP_PROXY": PROXY}, None),
        ("https://[::1]:5000/", {"HTTPS_PROXY": PROXY}, None),
    ],
)
def test_proxy_choice(url: str, env: dict[str, str], expected: str | None) -> None:
    assert proxy_for(url, env) == expected


def test_loopback_is_proxied_only_when_asked() -> None:
    env = {"HTTPS_PROXY": PROXY}
    assert proxy_for("https://127.0.0.1:5000/", env, proxy_loopback=True) == PROXY
    assert proxy_for("https://127.0.0.1:5000/", {**env, "NO_PROXY": "127.0.0.1"}, proxy_loopback=True) is None


def test_session_picks_the_proxy_from_its_environment() -> None:
    session = transport.Session(environ={"HTTPS_PROXY": PROXY, "NO_PROXY": "internal"})
    assert session.proxy("https://r.example.com/v2/") == PROXY
    assert session.proxy("https://r.internal/v2/") is None


def _a_ca(path: Path) -> Path:
    from tests.pki import make_pki

    return make_pki(path).ca


def test_ca_bundle_from_the_environment(tmp_path: Path) -> None:
    ca = _a_ca(tmp_path / "pki")

    def names(ctx: ssl.SSLContext) -> set[str]:
        return {
            x509.load_der_x509_certificate(der).subject.rfc4514_string() for der in ctx.get_ca_certs(binary_form=True)
        }

    assert names(transport.ssl_context(True, {"REQUESTS_CA_BUNDLE": str(ca)})) == {"CN=test CA"}
    assert names(transport.ssl_context(True, {"CURL_CA_BUNDLE": str(ca)})) == {"CN=test CA"}
    assert names(transport.ssl_context(True, {"SSL_CERT_FILE": str(ca)})) == {"CN=test CA"}
    assert names(transport.ssl_context(str(ca), {"REQUESTS_CA_BUNDLE": "/nonexistent"})) == {"CN=test CA"}
    unverified = transport.ssl_context(False, {})
    assert unverified.verify_mode == ssl.CERT_NONE


def test_one_retry_policy() -> None:
    backoff = Backoff()
    waits = [backoff.next() for _ in range(6)]
    assert all(0 <= w <= 3.0 for w in waits) and waits[0] <= 0.2
    assert Backoff().next("7") == 7.0
    assert Backoff().next("3600") == 10.0  # a server's Retry-After is honoured up to a cap
    assert Backoff().next("²") <= 0.2  # not ASCII digits: the jittered backoff


def test_one_module_owns_http() -> None:
    """No second HTTP stack in the package: only scitt_oci/transport.py opens outbound HTTP connections."""
    import re

    package = Path(transport.__file__).parent
    stack = re.compile(
        r"^\s*(import|from)\s+(requests|httpx|urllib3|aiohttp|urllib\.request|http\.client)\b|HTTPS?Connection\(", re.M
    )
    users = sorted(str(p.relative_to(package)) for p in package.rglob("*.py") if stack.search(p.read_text()))
    assert users == ["transport.py"]


def test_a_proxy_that_is_down_is_named_without_its_password() -> None:
    import socket

    from scitt_oci.oci.client import RegistryClient, RegistrySettings, TransientRegistryError

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"HTTPS_PROXY": f"http://user:s3cret@127.0.0.1:{port}"}
    with pytest.raises(transport.TransportError) as caught:
        transport.Session(environ=env).get("https://registry.example.test/v2/", timeout=2)
    assert f"the proxy (http://127.0.0.1:{port}) failed" in str(caught.value) and "s3cret" not in str(caught.value)
    client = RegistryClient(
        RegistrySettings.for_url("https://registry.example.test", attempts=1), session=transport.Session(environ=env)
    )
    with pytest.raises(TransientRegistryError, match=r"the proxy \(http://127\.0\.0\.1:\d+\) failed: .*refused"):
        client.tags("app")
