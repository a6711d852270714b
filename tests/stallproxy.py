"""A loopback TCP forwarder for tests that can stall: while stalled it holds what either side sends (the
connections stay open, nothing is refused), as a network partition or a wedged proxy in front of a
database does; `flow` lets the held bytes through again. It can also cut every connection and refuse
new ones for a while once it has carried a given number of bytes (a database restart mid-run)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator


class StallProxy:
    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._flowing = threading.Event()
        self._flowing.set()
        self._closed = False
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._sockets: list[socket.socket] = []
        self.carried = 0
        self.connections = 0  # accepted so far
        self._outage: tuple[int, float] | None = None  # after how many bytes, for how long
        self._down_until = 0.0
        self.outages = 0
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def outage_after(self, carried: int, seconds: float) -> None:
        """Once `carried` bytes have been forwarded, cut every connection and refuse new ones for `seconds`."""
        self._outage = (carried, seconds)

    def stall(self) -> None:
        self._flowing.clear()

    def flow(self) -> None:
        self._flowing.set()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:  # closed
                return
            if time.monotonic() < self._down_until:
                client.close()  # the server is away: the connection ends at once
                continue
            self.connections += 1
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            self._sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                self._flowing.wait()
                if self._closed or time.monotonic() < self._down_until:
                    return
                sink.sendall(data)
                self._count(len(data))
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def _count(self, n: int) -> None:
        with self._lock:
            self.carried += n
            if self._outage is None or self.carried < self._outage[0]:
                return
            self._down_until = time.monotonic() + self._outage[1]
            self._outage = None
            self.outages += 1
            cut, self._sockets = self._sockets, []
        for s in cut:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                s.close()

    def close(self) -> None:
        self._closed = True
        self._flowing.set()
        self._listener.close()
        for s in self._sockets:
            with contextlib.suppress(OSError):
                s.close()


@contextlib.contextmanager
def stall_proxy(target_port: int) -> Iterator[StallProxy]:
    proxy = StallProxy(target_port)
    try:
        yield proxy
    finally:
        proxy.close()
