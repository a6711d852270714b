"""A small HTTP/1.1 client on the standard library, for the registry client.

Why not `requests`: importing it costs ~60-120 ms, most of a cold `scitt-oci verify`; the registry
client needs only keep-alive connections, timeouts, TLS with an optional CA file, streaming reads
with a limit, and no redirects (it follows nothing on its own).

Timeouts are total: a request's `timeout` bounds everything from connecting to the last byte of
the body (a socket timeout alone bounds each read, so a server sending one byte every few seconds
would hold a caller forever). A watchdog thread shuts the socket down when the time is up; the
blocked read then ends, and the request fails with `DeadlineExceeded`.
"""

from __future__ import annotations

import base64
import contextlib
import heapq
import http.client
import itertools
import socket
import ssl
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any, overload
from urllib.parse import urlencode, urlsplit

from scitt_oci import jsonin

MAX_BODY = 16 * 1024 * 1024
HttpError = (OSError, http.client.HTTPException)


class DeadlineExceeded(TimeoutError):
    """No complete answer (headers and body) within the request's timeout."""


class _Guard:
    """The deadline of one request on one connection; `fired` once the watchdog cut it off."""

    def __init__(self, conn: http.client.HTTPConnection, deadline: float, timeout: float) -> None:
        self.conn = conn
        self.deadline = deadline
        self.timeout = timeout
        self.fired = False
        self.active = True

    def check(self, url: str) -> None:
        if self.fired:
            raise DeadlineExceeded(f"{url}: no complete answer within {self.timeout:.3g} s")

    def remaining(self) -> float:
        return max(0.001, self.deadline - time.monotonic())


class _Watchdog:
    """One daemon thread for every session: at each armed deadline still active, shut the
    connection's socket down (both ways), so whatever read or write blocks on it returns."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._heap: list[tuple[float, int, _Guard]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def arm(self, guard: _Guard) -> None:
        with self._lock:
            heapq.heappush(self._heap, (guard.deadline, next(self._order), guard))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="scitt-oci-http-deadlines", daemon=True)
                self._thread.start()
            self._wake.notify()

    def disarm(self, guard: _Guard) -> None:
        with self._lock:  # under the lock: a deadline is either cut off before this or never
            guard.active = False

    def _run(self) -> None:
        with self._lock:
            while True:
                while self._heap and not self._heap[0][2].active:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._wake.wait()
                    continue
                deadline, _, guard = self._heap[0]
                wait = deadline - time.monotonic()
                if wait > 0:
                    self._wake.wait(wait)
                    continue
                heapq.heappop(self._heap)
                sock = guard.conn.sock
                if sock is None:  # still connecting: look again shortly, until it has a socket or is disarmed
                    heapq.heappush(self._heap, (time.monotonic() + 0.05, next(self._order), guard))
                    continue
                guard.fired = True
                with contextlib.suppress(OSError):  # already closed: nothing left to cut off
                    sock.shutdown(socket.SHUT_RDWR)


_WATCHDOG = _Watchdog()


def ascii_int(value: str | None) -> int | None:
    """A header's non-negative integer, or None: only ASCII digits count (`int()` and `str.isdigit()`
    also take `²` or Arabic-Indic digits, which no HTTP header may carry)."""
    if value is None:
        return None
    text = value.strip()
    if not text or len(text) > 18 or not text.isascii() or not text.isdigit():
        return None
    return int(text)


class Headers:
    """Case-insensitive response headers (the first value of each)."""

    def __init__(self, items: list[tuple[str, str]]) -> None:
        self._items: dict[str, str] = {}
        for k, v in items:
            self._items.setdefault(k.lower(), v)

    @overload
    def get(self, name: str) -> str | None: ...
    @overload
    def get(self, name: str, default: str) -> str: ...
    def get(self, name: str, default: str | None = None) -> str | None:
        return self._items.get(name.lower(), default)

    def __contains__(self, name: str) -> bool:
        return name.lower() in self._items

    def __getitem__(self, name: str) -> str:
        return self._items[name.lower()]


class Response:
    def __init__(self, url: str, raw: http.client.HTTPResponse, *, stream: bool, guard: _Guard | None = None) -> None:
        self.url = url
        self.status_code = raw.status
        self.headers = Headers(raw.getheaders())
        self._raw = raw
        self._guard = guard
        self._content: bytes | None = None
        if not stream:
            self._content = self._read(MAX_BODY)

    def _finish(self) -> None:
        """The body was read to its end (or given up): its deadline no longer applies."""
        if self._guard is not None:
            _WATCHDOG.disarm(self._guard)
            self._guard.check(self.url)  # cut off: what was read may be short

    def _read(self, limit: int) -> bytes:
        try:
            data = self._raw.read(limit + 1)
        except HttpError:
            if self._guard is not None:
                self._guard.check(self.url)
            raise
        if len(data) > limit:
            self._raw.close()
            self._finish()
            raise http.client.HTTPException(f"{self.url}: the body is larger than {limit} bytes")
        self._finish()
        return data

    @property
    def content(self) -> bytes:
        if self._content is None:
            self._content = self._read(MAX_BODY)
        return self._content

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> dict[str, Any]:
        """The body as a JSON object (MalformedError otherwise)."""
        return jsonin.load_object(self.content, "response body", MAX_BODY)

    def done(self) -> bool:
        return self._content is not None or self._raw.isclosed()

    def drain(self, limit: int) -> bool:
        """Read and drop the rest of the body if it is at most `limit` bytes; True when the connection is reusable."""
        try:
            rest = self._raw.read(limit + 1)
            self._finish()
        except HttpError:
            return False
        return len(rest) <= limit and self._raw.isclosed()

    def iter_content(self, size: int) -> Iterator[bytes]:
        if self._content is not None:
            yield self._content
            return
        try:
            while chunk := self._raw.read1(size):
                yield chunk
        except HttpError:
            if self._guard is not None:
                self._guard.check(self.url)
            raise
        self._finish()


class Session:
    """Keep-alive connections, one per origin and thread."""

    def __init__(self, *, verify: bool | str = True) -> None:
        self.headers: dict[str, str] = {}
        self._verify = verify
        self._local = threading.local()
        self._context: ssl.SSLContext | None = None

    def _ssl(self) -> ssl.SSLContext:
        if self._context is None:
            if self._verify is False:
                ctx = ssl.create_default_context()
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            else:
                ctx = ssl.create_default_context(cafile=self._verify if isinstance(self._verify, str) else None)
            self._context = ctx
        return self._context

    def _connection(self, scheme: str, netloc: str, timeout: float) -> http.client.HTTPConnection:
        pool: dict[tuple[str, str], http.client.HTTPConnection] = self._local.__dict__.setdefault("pool", {})
        last: dict[tuple[str, str], Response] = self._local.__dict__.setdefault("last", {})
        previous = last.pop((scheme, netloc), None)
        # A caller that did not read the last body (a 404, a challenge): drain a small one, else reconnect.
        if previous is not None and not previous.done() and not previous.drain(64 * 1024):
            self._drop(scheme, netloc)
        conn = pool.get((scheme, netloc))
        if conn is None:
            if scheme == "https":
                conn = http.client.HTTPSConnection(netloc, timeout=timeout, context=self._ssl())
            else:
                conn = http.client.HTTPConnection(netloc, timeout=timeout)
            pool[(scheme, netloc)] = conn
        conn.timeout = timeout
        return conn

    def _drop(self, scheme: str, netloc: str) -> None:
        pool = self._local.__dict__.get("pool", {})
        conn = pool.pop((scheme, netloc), None)
        if conn is not None:
            conn.close()
        guard = self._local.__dict__.get("guards", {}).pop((scheme, netloc), None)
        if guard is not None:
            _WATCHDOG.disarm(guard)

    def _guard(self, scheme: str, netloc: str, conn: http.client.HTTPConnection, timeout: float) -> _Guard:
        """A fresh deadline for the next request on `conn`, replacing the last one (whose body, if it was
        not read to the end, was drained or its connection dropped in `_connection`)."""
        guards: dict[tuple[str, str], _Guard] = self._local.__dict__.setdefault("guards", {})
        previous = guards.pop((scheme, netloc), None)
        if previous is not None:
            _WATCHDOG.disarm(previous)
        guard = _Guard(conn, time.monotonic() + timeout, timeout)
        guards[(scheme, netloc)] = guard
        _WATCHDOG.arm(guard)
        return guard

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        data: bytes | None = None,
        params: Mapping[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float = 10.0,
        stream: bool = False,
    ) -> Response:
        parts = urlsplit(url)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        if params:
            target += ("&" if "?" in target else "?") + urlencode(params)
        sent = {**self.headers, **(headers or {})}
        if auth is not None:
            sent["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        if data is not None:
            sent["Content-Length"] = str(len(data))
        deadline = time.monotonic() + timeout
        for attempt in (1, 2):  # a kept-alive connection the server closed is retried once on a fresh one
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DeadlineExceeded(f"{url}: no complete answer within {timeout:.3g} s")
            conn = self._connection(parts.scheme, parts.netloc, remaining)
            guard = self._guard(parts.scheme, parts.netloc, conn, remaining)
            guard.timeout = timeout
            try:
                conn.request(method, target, body=data, headers=sent)
                raw = conn.getresponse()
                response = Response(url, raw, stream=stream and method != "HEAD", guard=guard)
                if method == "HEAD":
                    raw.read()
                    response._finish()
                self._local.__dict__.setdefault("last", {})[(parts.scheme, parts.netloc)] = response
                return response
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self._drop(parts.scheme, parts.netloc)
                guard.check(url)
                if attempt == 2:
                    raise
            except HttpError:
                self._drop(parts.scheme, parts.netloc)
                guard.check(url)
                raise
        raise http.client.HTTPException("unreachable")

    def get(self, url: str, **kw: Any) -> Response:
        return self.request("GET", url, **kw)
