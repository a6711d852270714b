"""A small HTTP/1.1 client on the standard library, for the registry client.

Why not `requests`: importing it costs ~60-120 ms, most of a cold `scitt-oci verify`; the registry
client needs only keep-alive connections, timeouts, TLS with an optional CA file, streaming reads
with a limit, and no redirects (it follows nothing on its own).
"""

from __future__ import annotations

import base64
import http.client
import ssl
import threading
from collections.abc import Iterator, Mapping
from typing import Any, overload
from urllib.parse import urlencode, urlsplit

from scitt_oci import jsonin

MAX_BODY = 16 * 1024 * 1024
HttpError = (OSError, http.client.HTTPException)


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
    def __init__(self, url: str, raw: http.client.HTTPResponse, *, stream: bool) -> None:
        self.url = url
        self.status_code = raw.status
        self.headers = Headers(raw.getheaders())
        self._raw = raw
        self._content: bytes | None = None
        if not stream:
            self._content = self._read(MAX_BODY)

    def _read(self, limit: int) -> bytes:
        data = self._raw.read(limit + 1)
        if len(data) > limit:
            self._raw.close()
            raise http.client.HTTPException(f"{self.url}: the body is larger than {limit} bytes")
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
        except HttpError:
            return False
        return len(rest) <= limit and self._raw.isclosed()

    def iter_content(self, size: int) -> Iterator[bytes]:
        if self._content is not None:
            yield self._content
            return
        while chunk := self._raw.read(size):
            yield chunk


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
        for attempt in (1, 2):  # a kept-alive connection the server closed is retried once on a fresh one
            conn = self._connection(parts.scheme, parts.netloc, timeout)
            try:
                conn.request(method, target, body=data, headers=sent)
                raw = conn.getresponse()
                response = Response(url, raw, stream=stream and method != "HEAD")
                if method == "HEAD":
                    raw.read()
                self._local.__dict__.setdefault("last", {})[(parts.scheme, parts.netloc)] = response
                return response
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self._drop(parts.scheme, parts.netloc)
                if attempt == 2:
                    raise
            except HttpError:
                self._drop(parts.scheme, parts.netloc)
                raise
        raise http.client.HTTPException("unreachable")

    def get(self, url: str, **kw: Any) -> Response:
        return self.request("GET", url, **kw)
