"""The listeners in process: request deadlines of GuardedHttpToolsProtocol, the TLS client certificate
in the ASGI scope, and `serve_all` starting, stopping and failing to start several listeners."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import ssl
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from scitt_oci.server.listeners import STARTUP_FAILURE, GuardedHttpToolsProtocol, serve_all
from tests.pki import make_pki


async def _echo(request: Request) -> Response:
    body = await request.body()
    tls = request.scope.get("extensions", {}).get("tls")
    return Response(json.dumps({"body": body.decode(), "tls": tls}), media_type="application/json")


APP = Starlette(routes=[Route("/echo", _echo, methods=["GET", "POST"])])


def _listening() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    return sock


@contextlib.contextmanager
def _server(monkeypatch: pytest.MonkeyPatch, **tls: Any) -> Iterator[int]:
    """A uvicorn server with the guarded protocol on a loopback port, in a thread; deadlines of 0.3 s."""
    monkeypatch.setattr(GuardedHttpToolsProtocol, "header_timeout", 0.3)
    monkeypatch.setattr(GuardedHttpToolsProtocol, "body_timeout", 0.3)
    sock = _listening()
    config = uvicorn.Config(
        APP, http=GuardedHttpToolsProtocol, lifespan="off", log_level="warning", loop="asyncio", **tls
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield sock.getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
        assert not thread.is_alive()


def _answer(s: socket.socket) -> bytes:
    out = b""
    while chunk := s.recv(4096):
        out += chunk
    return out


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def test_slow_headers_slow_bodies_and_idle_connections_get_408(monkeypatch: pytest.MonkeyPatch) -> None:
    with (
        _server(monkeypatch) as port,
        _connect(port) as idle,
        _connect(port) as slow_headers,
        _connect(port) as slow_body,
    ):
        slow_headers.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\n")
        slow_body.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab")
        assert _answer(idle).startswith(b"HTTP/1.1 408 Request Timeout")
        headers = _answer(slow_headers)
        assert headers.startswith(b"HTTP/1.1 408") and headers.endswith(b"the request headers did not arrive in time")
        assert _answer(slow_body).endswith(b"the request body did not arrive in time")


def test_a_kept_alive_connection_gets_a_fresh_deadline_per_request(monkeypatch: pytest.MonkeyPatch) -> None:
    with _server(monkeypatch) as port, _connect(port) as s:
        for n in range(2):
            body = f"request {n}".encode()
            s.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            answer = b""
            while body not in answer and (chunk := s.recv(4096)):
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 200") and body in answer
        # A third request whose headers stall gets its own deadline, and a 408 (not a silent close).
        s.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\n")
        assert _answer(s).startswith(b"HTTP/1.1 408 Request Timeout")


def test_the_verified_client_certificate_is_in_the_scope(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    tls = {
        "ssl_certfile": str(pki.server_cert),
        "ssl_keyfile": str(pki.server_key),
        "ssl_ca_certs": str(pki.ca),
        "ssl_cert_reqs": ssl.CERT_OPTIONAL,
    }
    context = ssl.create_default_context(cafile=str(pki.ca))
    with _server(monkeypatch, **tls) as port:
        for cert in (None, (pki.client_cert, pki.client_key)):
            if cert:
                context.load_cert_chain(*cert)
            with context.wrap_socket(_connect(port), server_hostname="localhost") as s:
                s.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                answer = json.loads(_answer(s).split(b"\r\n\r\n", 1)[1])
            assert answer["tls"]["tls_version"].startswith("TLS")
            chain = answer["tls"]["client_cert_chain"]
            if cert:
                [pem] = chain
                assert ssl.PEM_cert_to_DER_cert(pem) == ssl.PEM_cert_to_DER_cert(pki.client_cert.read_text())
            else:
                assert chain == []


def _stopping_app(stopped: list[str]) -> Starlette:
    """An app that sends this process SIGINT when asked (GET /stop), once it is serving: `serve_all` must
    stop every listener, the app's lifespan must end (after the request in flight), and `serve_all` return."""

    async def stop(request: Request) -> Response:
        signal.raise_signal(signal.SIGINT)
        # Still answering when the shutdown starts, so this listener waits for the request while the other
        # one ends first: that must not turn this listener's shutdown into a forced exit without its lifespan.
        await asyncio.sleep(0.3)
        return Response(status_code=204)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        stopped.append("stopped")

    return Starlette(routes=[Route("/stop", stop)], lifespan=lifespan)


def _ask_to_stop(port: int) -> None:
    """GET /stop once the listener accepts (a signal during start-up would race uvicorn's own start)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
                conn.sendall(b"GET /stop HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                conn.recv(1024)
                return
        except ConnectionRefusedError:
            time.sleep(0.01)  # not listening yet: look again until the deadline


def test_serve_all_stops_every_listener_on_a_signal() -> None:
    stopped: list[str] = []
    first, second = _listening(), _listening()
    ports = [s.getsockname()[1] for s in (first, second)]
    first.close()
    second.close()
    configs = [
        uvicorn.Config(_stopping_app(stopped), host="127.0.0.1", port=ports[0], lifespan="on", log_level="warning"),
        uvicorn.Config(APP, host="127.0.0.1", port=ports[1], lifespan="off", log_level="warning"),
    ]
    asker = threading.Thread(target=_ask_to_stop, args=(ports[0],), daemon=True)
    asker.start()
    assert serve_all(configs) == 0
    asker.join(10)
    assert stopped == ["stopped"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the loop's handlers are removed


def test_serve_all_reports_a_listener_that_cannot_start() -> None:
    busy = _listening()
    try:
        configs = [
            uvicorn.Config(APP, host="127.0.0.1", port=busy.getsockname()[1], lifespan="off", log_level="critical")
        ]
        assert serve_all(configs) == STARTUP_FAILURE
    finally:
        busy.close()


def test_configure_sets_both_deadlines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(GuardedHttpToolsProtocol, "header_timeout", 10.0)
    monkeypatch.setattr(GuardedHttpToolsProtocol, "body_timeout", 60.0)
    GuardedHttpToolsProtocol.configure(2.5, 7.5)
    assert (GuardedHttpToolsProtocol.header_timeout, GuardedHttpToolsProtocol.body_timeout) == (2.5, 7.5)


class _Recorder(asyncio.Transport):
    """A connection's transport that records what the protocol writes (the client side is not under test)."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[bytes] = []
        self.written = asyncio.Event()
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))
        self.written.set()

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8700)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def _connection(app: Any) -> tuple[GuardedHttpToolsProtocol, _Recorder]:
    config = uvicorn.Config(app, http=GuardedHttpToolsProtocol, lifespan="off", log_level="warning")
    protocol = GuardedHttpToolsProtocol(config, uvicorn.server.ServerState(), {}, asyncio.get_running_loop())
    transport = _Recorder()
    protocol.connection_made(transport)
    return protocol, transport


def test_a_response_leaves_in_one_write() -> None:
    """Status line, headers and body in one send: uvicorn alone writes them in two (two TCP segments)."""

    async def scenario() -> list[bytes]:
        protocol, transport = await _connection(APP)
        protocol.data_received(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
        await asyncio.wait_for(transport.written.wait(), 10)
        assert protocol.cycle is not None and protocol.cycle.response_complete
        return transport.writes

    writes = asyncio.run(scenario())
    assert len(writes) == 1
    head, _, body = writes[0].partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and json.loads(body)["body"] == "hi"


def test_a_streamed_body_leaves_as_it_is_made() -> None:
    """Joined writes wait for the end of the loop's turn at most: a chunk is sent before the next exists."""
    release = asyncio.Event()

    async def chunks() -> AsyncIterator[bytes]:
        yield b"first"
        await release.wait()
        yield b"second"

    async def stream(request: Request) -> Response:
        from starlette.responses import StreamingResponse

        return StreamingResponse(chunks(), media_type="text/plain")

    app = Starlette(routes=[Route("/stream", stream)])

    async def scenario() -> tuple[bytes, bytes]:
        protocol, transport = await _connection(app)
        protocol.data_received(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        while b"first" not in b"".join(transport.writes):
            transport.written.clear()
            await asyncio.wait_for(transport.written.wait(), 10)  # never set if the first chunk waited
        before = b"".join(transport.writes)
        release.set()
        while protocol.cycle is None or not protocol.cycle.response_complete:
            transport.written.clear()
            await asyncio.wait_for(transport.written.wait(), 10)
        return before, b"".join(transport.writes)

    before, after = asyncio.run(scenario())
    assert b"second" not in before and after.endswith(b"6\r\nsecond\r\n0\r\n\r\n")
