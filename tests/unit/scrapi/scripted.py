"""A loopback HTTP server thread that answers each request with the next scripted reply: a transparency
service as slow, busy or wrong as a test needs, for the SCRAPI client and the commands built on it."""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Reply:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    hold: threading.Event | None = None  # answer only once the test sets it (a slow service)
    chunks: list[bytes] | None = None  # sent without Content-Length


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class Scripted:
    """A loopback HTTP server answering each request with the next scripted Reply (404 once they run out)."""

    def __init__(self, *replies: Reply, host: str = "127.0.0.1") -> None:
        self.replies: queue.Queue[Reply] = queue.Queue()
        for r in replies:
            self.replies.put(r)
        self.seen: queue.Queue[Seen] = queue.Queue()
        self.holds: list[threading.Event] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def _answer(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                owner.seen.put(Seen(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                try:
                    reply = owner.replies.get_nowait()
                except queue.Empty:
                    reply = Reply(404, b"unscripted")
                if reply.hold is not None:
                    reply.hold.wait(30)
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                try:
                    if reply.chunks is None:
                        self.send_header("Content-Length", str(len(reply.body)))
                        self.end_headers()
                        self.wfile.write(reply.body)
                        return
                    self.send_header("Connection", "close")
                    self.end_headers()
                    for chunk in reply.chunks:
                        self.wfile.write(chunk)
                    self.close_connection = True
                except OSError:  # the client gave up and closed
                    self.close_connection = True

            do_GET = do_POST = _answer

        self._server = ThreadingHTTPServer((host, 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def requests(self) -> list[Seen]:
        out = []
        while not self.seen.empty():
            out.append(self.seen.get_nowait())
        return out

    def close(self) -> None:
        for hold in self.holds:
            hold.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
