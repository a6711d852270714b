"""The listeners hold no connection forever, refuse credentials in clear beyond loopback, and check a
webhook's secret before reading its body."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Scope

from scitt_oci.server.plaintext import RefusePlainCredentials
from tests.helpers import cli
from tests.pki import Pki
from tests.serverproc import ServerProcess

SLOW = 150  # connections that trickle or stall, held at once


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("listeners")
    (root / "secret").write_text("listener-test-secret-0123456789")
    srv = ServerProcess(
        root / "data",
        args=["--registry", "127.0.0.1:5999", "--registry-insecure", "--webhook-secret-file", str(root / "secret")],
        env={"SCITT_OCI_HTTP__HEADER_TIMEOUT_SECONDS": "1", "SCITT_OCI_HTTP__BODY_TIMEOUT_SECONDS": "1"},
    ).start()
    yield srv
    srv.stop()


def _connect(srv: ServerProcess) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    return s


def _answer(s: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (blocking, bounded by the socket timeout)."""
    out = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            return out
        out += chunk


def test_slow_headers_and_bodies_are_cut_off_while_others_are_served(server: ServerProcess) -> None:
    stalled = [_connect(server) for _ in range(SLOW // 3)]  # connect and never send a byte
    partial = [_connect(server) for _ in range(SLOW // 3)]
    for s in partial:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")  # headers that never end
    bodies = [_connect(server) for _ in range(SLOW // 3)]
    for s in bodies:
        s.sendall(
            b"POST /entries HTTP/1.1\r\nHost: x\r\nContent-Type: application/cose\r\nContent-Length: 1000\r\n\r\nab"
        )
    assert requests.get(server.url + "/healthz", timeout=5).status_code == 200  # the others are still served
    started = time.monotonic()
    for s in partial + stalled:
        answer = _answer(s)
        assert answer == b"" or answer.startswith(b"HTTP/1.1 408"), answer[:100]
        s.close()
    for s in bodies:
        answer = _answer(s)
        assert answer.startswith(b"HTTP/1.1 408") and b"request body" in answer, answer[:200]
        s.close()
    assert time.monotonic() - started < 8  # each closed about a second after it stalled, not held forever
    assert requests.get(server.url + "/healthz", timeout=5).status_code == 200


def test_a_kept_alive_connection_gets_a_fresh_deadline_per_request(server: ServerProcess) -> None:
    with requests.Session() as s:
        for _ in range(3):
            assert s.get(server.url + "/healthz", timeout=5).status_code == 200


def test_webhook_secret_is_checked_before_the_body_is_read(server: ServerProcess) -> None:
    s = _connect(server)
    s.sendall(
        b"POST /webhooks/distribution HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 900000\r\n\r\n{"
    )
    s.settimeout(0.9)  # under the body deadline: an answer before it means the body was not awaited
    head = s.recv(4096)
    assert head.startswith(b"HTTP/1.1 401"), head[:200]
    s.close()


def _echo_app() -> RefusePlainCredentials:
    async def ok(request: Request) -> Response:
        return Response(b"ok")

    return RefusePlainCredentials(
        Starlette(
            routes=[
                Route("/entries", ok, methods=["POST"]),
                Route("/webhooks/{kind}", ok, methods=["POST"]),
                Route("/healthz", ok, methods=["GET"]),
            ]
        )
    )


def _call(
    app: ASGIApp,
    method: str,
    path: str,
    *,
    scheme: str = "http",
    client: tuple[str, int],
    headers: dict[str, str] | None = None,
    body: bytes = b"",
) -> tuple[int, bytes]:
    """One request straight into the ASGI app, as a server would deliver it from `client`."""
    import asyncio

    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": scheme,
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "client": client,
        "server": ("scitt.example", 80),
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
    }
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    async def deliver() -> None:  # asyncio.run takes a coroutine; an ASGI app returns any awaitable
        await app(scope, receive, send)

    asyncio.run(deliver())
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:])


@pytest.mark.parametrize("client", [("192.0.2.7", 5000), ("203.0.113.9", 1)])
def test_credentials_in_clear_beyond_loopback_are_refused(client: tuple[str, int]) -> None:
    app = _echo_app()
    status, text = _call(
        app, "POST", "/entries", client=client, headers={"Authorization": "Bearer some-token-0123456789"}
    )
    assert status == 403 and b"plain HTTP" in text
    assert _call(app, "POST", "/webhooks/distribution", client=client, body=b"{}")[0] == 403
    assert _call(app, "GET", "/healthz", client=client)[0] == 200  # no credentials: served
    assert _call(app, "POST", "/entries", client=client)[0] == 200  # an open registration carries no secret
    assert (
        _call(app, "POST", "/entries", client=client, scheme="https", headers={"Authorization": "Bearer t"})[0] == 200
    )
    assert _call(app, "POST", "/webhooks/distribution", client=("127.0.0.1", 5000), body=b"{}")[0] == 200


def test_plain_credentials_guard_is_in_the_service(tmp_path: Path) -> None:
    from scitt_oci import config, runtime

    rt = runtime.build(config.load(environ={"SCITT_OCI_DATA_DIR": str(tmp_path / "d")}))
    status, _ = _call(
        rt.app,
        "POST",
        "/entries",
        client=("192.0.2.7", 5000),
        headers={"Authorization": "Bearer " + "t" * 20, "Content-Type": "application/cose"},
    )
    assert status == 403
    rt.service.store.close()


def _build(tmp_path: Path, **admission: object) -> object:
    from scitt_oci import config, runtime

    return runtime.build(config.load(overrides={"data_dir": str(tmp_path / "d"), "admission": admission}))


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"trust_self": True, "listen": "127.0.0.1:9443"}, "serves TLS only"),
        ({"trust_self": True, "client_ca": "/nonexistent/ca.pem"}, "set admission.listen too"),
        ({"trust_self": True, "deploy_log": True}, "only for authenticated reviews"),
    ],
)
def test_admission_listener_settings_are_checked_at_start(
    tmp_path: Path, settings: dict[str, object], message: str
) -> None:
    from scitt_oci.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        _build(tmp_path, **settings)


def test_trust_self_trusts_this_instances_keys(tmp_path: Path) -> None:
    from scitt_oci.runtime import Runtime
    from scitt_oci.verify.trust import load_policy

    rt = _build(tmp_path, trust_self=True)
    assert isinstance(rt, Runtime) and rt.admission_policy is not None
    policy = load_policy(rt.admission_policy)
    assert [k.kid for k in policy.services[0].keys] == [rt.service.key.kid]
    assert policy.issuers is not None
    assert [k.kid for k in policy.issuers[0].keys] == [rt.issuer_key.kid] and policy.issuers[
        0
    ].iss == rt.service.identity
    assert b"PRIVATE" not in (rt.admission_policy.parent / "issuer.pem").read_bytes()
    rt.service.store.close()


_REVIEW = {  # a review of a ConfigMap: no image in it
    "apiVersion": "admission.k8s.io/v1",
    "kind": "AdmissionReview",
    "request": {"uid": "u", "kind": {"kind": "ConfigMap"}, "namespace": "n", "object": {}},
}


def _admission_tls(pki: Pki, port: int, *, client_ca: bool) -> dict[str, str]:
    """The settings of an admission listener on 127.0.0.1:port serving pki's server certificate, trusting
    this instance's keys; with client_ca, it asks callers for a certificate pki's CA signed."""
    env = {
        "SCITT_OCI_ADMISSION__TRUST_SELF": "true",
        "SCITT_OCI_ADMISSION__LISTEN": f"127.0.0.1:{port}",
        "SCITT_OCI_ADMISSION__TLS_CERT": str(pki.server_cert),
        "SCITT_OCI_ADMISSION__TLS_KEY": str(pki.server_key),
    }
    return env | ({"SCITT_OCI_ADMISSION__CLIENT_CA": str(pki.ca)} if client_ca else {})


def test_client_certificate_only_refuses_the_handshake_without_one(tmp_path: Path) -> None:
    from tests.pki import make_pki
    from tests.serverproc import free_port

    pki = make_pki(tmp_path / "pki")
    port = free_port()
    srv = ServerProcess(
        tmp_path / "data",
        env=_admission_tls(pki, port, client_ca=True),
    ).start()
    try:
        url = f"https://127.0.0.1:{port}/admission/validate"
        with pytest.raises(requests.exceptions.ConnectionError):  # TLS 1.3: a handshake alert or a reset
            requests.post(url, json=_REVIEW, verify=str(pki.ca), timeout=10)
        r = requests.post(
            url, json=_REVIEW, verify=str(pki.ca), cert=(str(pki.client_cert), str(pki.client_key)), timeout=10
        )
        assert r.status_code == 200 and r.json()["response"]["allowed"] is True
        assert "client certificate)" in srv.output()
    finally:
        srv.stop()


def test_the_admission_tls_handshake_is_bounded_by_the_header_timeout(tmp_path: Path) -> None:
    """F7: a connection to the TLS listener that never sends (or never finishes) its ClientHello is
    closed after http.header_timeout_seconds, not asyncio's 60 s; a real client is served meanwhile."""
    from tests.pki import make_pki
    from tests.serverproc import free_port

    pki = make_pki(tmp_path / "pki")
    port = free_port()
    srv = ServerProcess(
        tmp_path / "data",
        env={"SCITT_OCI_HTTP__HEADER_TIMEOUT_SECONDS": "1", **_admission_tls(pki, port, client_ca=True)},
    ).start()
    try:
        silent = socket.create_connection(("127.0.0.1", port), timeout=20)
        partial = socket.create_connection(("127.0.0.1", port), timeout=20)
        partial.sendall(bytes.fromhex("160301"))  # the start of a TLS record, never finished
        started = time.monotonic()
        r = requests.post(
            f"https://127.0.0.1:{port}/admission/validate",
            json=_REVIEW,
            verify=str(pki.ca),
            cert=(str(pki.client_cert), str(pki.client_key)),
            timeout=10,
        )
        assert r.status_code == 200
        for s in (silent, partial):
            try:
                assert s.recv(100) == b""  # closed by the server
            except ConnectionResetError:
                pass
            s.close()
        assert time.monotonic() - started < 5  # about 1 s; asyncio's default was 60 s
    finally:
        srv.stop()


def test_a_busy_admission_port_stops_the_service_with_exit_3_and_no_traceback(tmp_path: Path) -> None:
    import os

    from tests.pki import make_pki
    from tests.serverproc import free_port

    pki = make_pki(tmp_path / "pki")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        env = {**os.environ, **_admission_tls(pki, busy.getsockname()[1], client_ca=False)}
        proc = cli("serve", "--data-dir", str(tmp_path / "d"), "--listen", f"127.0.0.1:{free_port()}", env=env)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "address already in use" in proc.stderr and "Traceback" not in proc.stderr
