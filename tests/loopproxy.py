"""A small loopback HTTP proxy for tests: CONNECT tunnels (https) and absolute-form requests (http),
to the port asked for on 127.0.0.1 whatever the host name, counting what it carried per host.

Host names under `.proxied.test` resolve nowhere: a client reaches them only through this proxy, so a
request that succeeds on such a name went through it."""

from __future__ import annotations

import collections
import socket
import socketserver
import threading
from urllib.parse import urlsplit


class _Handler(socketserver.StreamRequestHandler):
    server: LoopProxy
    rbufsize = 0  # unbuffered: after CONNECT the socket itself is piped, nothing may sit in a buffer

    def handle(self) -> None:
        line = self.rfile.readline(8192).decode("latin-1")
        headers: list[str] = []
        while (h := self.rfile.readline(8192).decode("latin-1")) not in ("\r\n", "\n", ""):
            headers.append(h)
        method, target, _ = line.split(" ", 2)
        if method == "CONNECT":
            host, _, port = target.rpartition(":")
            upstream = socket.create_connection(("127.0.0.1", int(port)), timeout=10)
            self.server.count("tunnels", host)
            self.wfile.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            self._pipe(upstream)
            return
        parts = urlsplit(target)
        if parts.scheme != "http" or parts.port is None:
            self.wfile.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            return
        self.server.count("forwarded", parts.hostname or "")
        upstream = socket.create_connection(("127.0.0.1", parts.port), timeout=10)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        kept = [h for h in headers if not h.lower().startswith(("connection:", "proxy-connection:"))]
        length = next((int(h.split(":", 1)[1]) for h in kept if h.lower().startswith("content-length:")), 0)
        head = f"{method} {path} HTTP/1.1\r\n" + "".join(kept) + "Connection: close\r\n\r\n"
        body = b""
        while len(body) < length and (chunk := self.rfile.read(length - len(body))):
            body += chunk
        upstream.sendall(head.encode("latin-1") + body)
        while data := upstream.recv(65536):  # one request per connection: the origin closes after it
            self.wfile.write(data)
        upstream.close()

    def _pipe(self, upstream: socket.socket) -> None:
        client = self.connection

        def back() -> None:
            try:
                while data := upstream.recv(65536):
                    client.sendall(data)
            except OSError:
                pass
            finally:
                try:
                    client.shutdown(socket.SHUT_WR)
                except OSError:
                    pass

        t = threading.Thread(target=back, daemon=True)
        t.start()
        try:
            while data := client.recv(65536):
                upstream.sendall(data)
        except OSError:
            pass
        finally:
            try:
                upstream.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            t.join(30)
            upstream.close()


class LoopProxy(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.seen: dict[str, collections.Counter[str]] = {
            "tunnels": collections.Counter(),
            "forwarded": collections.Counter(),
        }
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    def count(self, kind: str, host: str) -> None:
        with self._lock:
            self.seen[kind][host] += 1

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def __enter__(self) -> LoopProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()
