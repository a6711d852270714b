"""A small local HTTP server that answers with whatever a test tells it to: a hostile transparency service.

Routes map "METHOD /path" to (status, content type, body[, extra headers]); a body may be bytes or
an iterator of byte chunks (sent without Content-Length unless an extra header declares one, so
that a client cannot tell the size in advance).
Every request is recorded as "METHOD /path".
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

Body = bytes | Iterable[bytes]
Route = tuple[int, str, Body] | tuple[int, str, Body, dict[str, str]]


@dataclass
class HostileServer:
    routes: Mapping[str, Route] = field(default_factory=dict)
    seen: list[str] = field(default_factory=list)
    sent: dict[str, int] = field(default_factory=dict)  # bytes written per route, until the client hung up

    def __enter__(self) -> HostileServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                path = self.path.split("?", 1)[0]
                route = f"{self.command} {path}"
                owner.seen.append(route)
                status, content_type, body, *extra = owner.routes.get(route, (404, "text/plain", b"no such route"))
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                for name, value in (extra[0] if extra else {}).items():
                    self.send_header(name, value)
                if isinstance(body, bytes):
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return
                self.send_header("Connection", "close")
                self.end_headers()
                owner.sent[route] = 0
                try:
                    for chunk in body:
                        self.wfile.write(chunk)
                        owner.sent[route] += len(chunk)
                except OSError:  # the client stopped reading and closed: what a bounded reader does
                    pass
                self.close_connection = True

            do_GET = _answer
            do_POST = _answer

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def endless(chunk: bytes = b"\0" * 65536, total: int = 1 << 40) -> Iterator[bytes]:
    """`total` bytes (default: a terabyte, i.e. more than any client should read) in chunks."""
    sent = 0
    while sent < total:
        yield chunk
        sent += len(chunk)
