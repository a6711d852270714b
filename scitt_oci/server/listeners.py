"""Serving: uvicorn listeners with read deadlines, and the TLS facts an app needs to authenticate clients.

uvicorn waits forever for a request's headers and body (a connection that sends one byte a minute is
held for good). `GuardedHttpToolsProtocol` gives every request a deadline for its line and headers
and another for its body; past either the client gets 408 and the connection is closed. It also
puts the verified client certificate of a TLS connection into the ASGI scope, as the ASGI TLS
extension names it (`scope["extensions"]["tls"]["client_cert_chain"]`), and joins each response's
writes into one send (`_JoinedWrites`).

Several listeners (the main one and the admission one) run in one event loop: `serve_all`. A TLS
listener's handshake is bounded by the same header deadline: asyncio's default (60 s) would let a
client that connects and never sends a ClientHello hold the socket six times longer than the
header deadline says (the protocol above sees a TLS connection only once its handshake is done).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import ssl
from collections.abc import Iterator
from typing import Any, ClassVar

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

STARTUP_FAILURE = 3


class _JoinedWrites:
    """A connection's transport whose writes wait for the end of the response (or of the event loop's
    turn) and then leave in one send.

    uvicorn writes a response's status line and headers and then its body: two send calls, two TCP
    segments on a connection with Nagle off, and two wake-ups for the client. Joined, a small answer (a
    registration's 201 and its receipt) costs one; a streamed body still leaves once per loop turn.
    Everything but `write` and `close` is the transport's own."""

    __slots__ = ("_loop", "_queued", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._queued: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self._queued:
            self._loop.call_soon(self.flush)
        self._queued.append(data)

    def flush(self) -> None:
        if self._queued:
            data = b"".join(self._queued)
            self._queued = []
            if not self._transport.is_closing():
                self._transport.write(data)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline for each request's headers and one for its body."""

    header_timeout: ClassVar[float] = 10.0
    body_timeout: ClassVar[float] = 60.0

    _deadline: asyncio.TimerHandle | None = None
    _phase: str = "idle"
    _tls: dict[str, Any] | None = None

    @classmethod
    def configure(cls, header_timeout: float, body_timeout: float) -> None:
        cls.header_timeout, cls.body_timeout = header_timeout, body_timeout

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        if isinstance(ssl_object, ssl.SSLObject):
            # The handshake is complete here; a peer certificate present has been verified against the
            # listener's client CA (the context requests one only when a CA is configured).
            der = ssl_object.getpeercert(binary_form=True)
            self._tls = {
                "tls_version": ssl_object.version(),
                "client_cert_chain": [ssl.DER_cert_to_PEM_cert(der)] if der else [],
            }
        self._arm("headers", self.header_timeout)  # a connection that never sends a request is closed too
        self.transport = _JoinedWrites(transport, self.loop)  # type: ignore[assignment]

    def _arm(self, phase: str, seconds: float) -> None:
        self._disarm()
        self._phase = phase
        self._deadline = self.loop.call_later(seconds, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._phase = "idle"

    def _expired(self) -> None:
        self._deadline = None
        if self.transport is None or self.transport.is_closing():
            return
        cycle = self.cycle
        # In the headers phase of a kept-alive connection's next request, `cycle` is still the last one (done).
        next_request = self._phase == "headers" and cycle is not None and cycle.response_complete
        if cycle is None or not cycle.response_started or next_request:
            what = "request headers" if self._phase == "headers" else "request body"
            msg = f"the {what} did not arrive in time".encode()
            self.transport.write(
                b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
                b"connection: close\r\ncontent-length: " + str(len(msg)).encode() + b"\r\n\r\n" + msg
            )
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True  # the app's receive() now answers http.disconnect; its answer is dropped
            cycle.message_event.set()
        self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._tls is not None:
            self.scope["extensions"] = {"tls": dict(self._tls)}  # type: ignore[dict-item]
        if self._deadline is None:  # a keep-alive connection's next request: its headers get their own deadline
            self._arm("headers", self.header_timeout)

    def on_headers_complete(self) -> None:
        self._arm("body", self.body_timeout)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()
        super().on_message_complete()

    def on_response_complete(self) -> None:
        transport = self.transport
        if isinstance(transport, _JoinedWrites):
            transport.flush()
        super().on_response_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)


class _Listener(uvicorn.Server):
    """A uvicorn server that leaves signals to `serve_all`, which stops every listener at once."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def _bound_tls_handshakes(loop: asyncio.AbstractEventLoop, seconds: float) -> None:
    """Make every TLS server this loop creates give up a handshake after `seconds` (uvicorn passes no
    `ssl_handshake_timeout`, so asyncio's 60 s would apply)."""
    create_server = loop.create_server

    async def bounded(*args: Any, **kw: Any) -> Any:
        if kw.get("ssl") is not None:
            kw.setdefault("ssl_handshake_timeout", seconds)
        return await create_server(*args, **kw)

    loop.create_server = bounded  # type: ignore[method-assign]


async def _serve(servers: list[_Listener]) -> None:
    loop = asyncio.get_running_loop()
    _bound_tls_handshakes(loop, GuardedHttpToolsProtocol.header_timeout)

    signals = 0

    def stop() -> None:
        for s in servers:
            s.should_exit = True

    def on_signal() -> None:
        # A second signal forces the exit, as uvicorn does alone; the first lets every app shut down.
        nonlocal signals
        signals += 1
        stop()
        if signals > 1:
            for s in servers:
                s.force_exit = True

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)

    async def run(server: _Listener) -> None:
        with contextlib.suppress(SystemExit):  # uvicorn exits when it cannot bind; `started` stays False
            await server.serve()

    tasks = [asyncio.ensure_future(run(s)) for s in servers]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        stop()  # one listener ending (a failed start, a signal) ends them all, each shutting down in full
        await asyncio.gather(*tasks, return_exceptions=True)
        for t in done:
            t.result()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def serve_all(configs: list[uvicorn.Config]) -> int:
    """Run each listener in one event loop until a signal; 0, or STARTUP_FAILURE if one could not start."""
    servers = [_Listener(c) for c in configs]
    with asyncio.Runner(loop_factory=configs[0].get_loop_factory()) as runner:
        runner.run(_serve(servers))
    return 0 if all(s.started for s in servers) else STARTUP_FAILURE
