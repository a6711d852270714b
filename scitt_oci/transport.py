"""The one HTTP transport for every outbound call: the registry client, the SCRAPI client (`register`,
`trust pin`, `log audit`, `promote`), the tiled-log reader (`mirror`, the witness client).

Built on urllib3 (what `requests` stands on; ADR 0003 has the measured start-up cost). What it adds:

- Proxies as users behind corporate networks set them for any HTTP tool: `HTTPS_PROXY` for https://
  URLs (a CONNECT tunnel; TLS to the origin runs inside it), `HTTP_PROXY` for http:// URLs (absolute-form
  requests), `ALL_PROXY` for either, lower-case names too; `NO_PROXY` as curl and requests read it
  (`*`; host names matching themselves and their subdomains, a leading dot optional; `host:port`;
  IP addresses and CIDR blocks). Loopback (localhost, 127.0.0.0/8, ::1) is never proxied unless the
  session is built with `proxy_loopback=True`.
- CA bundles: an explicit file wins; otherwise `REQUESTS_CA_BUNDLE`, `CURL_CA_BUNDLE`, `SSL_CERT_FILE`
  (a file, or a directory of hashed certificates), `SSL_CERT_DIR`, else the system store. A bundle named
  in the environment replaces the system store, as it does for OpenSSL, curl and requests.
- Bounded bodies (MAX_BODY unless the caller streams with its own limit), no redirects followed, no
  retries of its own beyond one fresh connection when a kept-alive one was closed under it: the callers
  retry with `Backoff`, the one retry policy.
- A total deadline per request: `timeout` bounds everything from connecting to the last byte of the
  body. urllib3's own timeouts bound each socket read, so a server sending one byte every few seconds
  would hold a caller forever; here a watchdog thread shuts the connection's socket down when the time
  is up, the blocked read or write ends, and the request fails with `DeadlineExceeded`. The socket is
  reached through the pools' connection class (registered with the current request's guard when it
  connects and when it sends), and stays the guard's until the body is read to its end or dropped.
- Failures raised as the standard library's exceptions (`ssl.SSLCertVerificationError`,
  `ConnectionRefusedError`, `TimeoutError`, ...) or `TransportError`, all `OSError`s.
"""

from __future__ import annotations

import base64
import contextlib
import heapq
import http.client
import ipaddress
import itertools
import os
import random
import socket
import ssl
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any, overload
from urllib.parse import unquote, urlencode, urlsplit

import urllib3
from urllib3 import connection as u3conn
from urllib3 import exceptions as u3

from scitt_oci import jsonin
from scitt_oci.errors import DeadlineExceeded as DeadlineExceeded  # defined there since #12; kept importable here
from scitt_oci.errors import TransportError as TransportError  # defined there since #12; kept importable here

MAX_BODY = 16 * 1024 * 1024


HttpError = (OSError, http.client.HTTPException)


# ----- total deadlines -----


class _Guard:
    """The deadline of one request; `conn` the connection it runs on (once it has one), `fired` once
    the watchdog cut it off."""

    def __init__(self, url: str, timeout: float) -> None:
        self.url = url
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self.conn: u3conn.HTTPConnection | None = None
        self.fired = False
        self.active = True

    def error(self) -> DeadlineExceeded:
        return DeadlineExceeded(f"{self.url}: no complete answer within {self.timeout:.3g} s")

    def check(self) -> None:
        if self.fired:
            raise self.error()

    def remaining(self) -> float:
        return max(0.001, self.deadline - time.monotonic())


class _Watchdog:
    """One daemon thread for every session: at each armed deadline still active, shut the socket of
    the connection the request runs on down (both ways), so whatever read or write blocks on it returns."""

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

    def attach(self, conn: u3conn.HTTPConnection) -> None:
        """`conn` now carries the current thread's request (if it has a guard): its socket is that
        guard's to cut off, and no longer any earlier request's."""
        guard: _Guard | None = getattr(_CURRENT, "guard", None)
        with self._lock:
            conn.__dict__["_scitt_guard"] = guard
            if guard is not None:
                guard.conn = conn

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
                conn = guard.conn
                sock = conn.sock if conn is not None and conn.__dict__.get("_scitt_guard") is guard else None
                if sock is None:  # still connecting (bounded by the connect timeout): look again shortly
                    heapq.heappush(self._heap, (time.monotonic() + 0.05, next(self._order), guard))
                    continue
                guard.fired = True
                with contextlib.suppress(OSError):  # already closed: nothing left to cut off
                    sock.shutdown(socket.SHUT_RDWR)


_WATCHDOG = _Watchdog()
_CURRENT = threading.local()  # .guard: the deadline of the request this thread is making


class _GuardedHTTPConnection(u3conn.HTTPConnection):
    def connect(self) -> None:
        _WATCHDOG.attach(self)
        super().connect()

    def request(self, *args: Any, **kwargs: Any) -> None:
        _WATCHDOG.attach(self)
        super().request(*args, **kwargs)


class _GuardedHTTPSConnection(_GuardedHTTPConnection, u3conn.HTTPSConnection):
    """The same guard over TLS: `_GuardedHTTPConnection`'s `super()` calls reach `HTTPSConnection`'s."""


class _HTTPPool(urllib3.HTTPConnectionPool):
    ConnectionCls = _GuardedHTTPConnection


class _HTTPSPool(urllib3.HTTPSConnectionPool):
    ConnectionCls = _GuardedHTTPSConnection


def ascii_int(value: str | None) -> int | None:
    """A header's non-negative integer, or None: only ASCII digits count (`int()` and `str.isdigit()`
    also take `²` or Arabic-Indic digits, which no HTTP header may carry)."""
    if value is None:
        return None
    text = value.strip()
    if not text or len(text) > 18 or not text.isascii() or not text.isdigit():
        return None
    return int(text)


class Backoff:
    """The one retry policy: jittered exponential waits (0.2 s doubling, capped at `cap`), a server's
    Retry-After (ASCII digits only) honoured up to `max_retry_after` seconds."""

    def __init__(self, *, first: float = 0.2, cap: float = 3.0, max_retry_after: float = 10.0) -> None:
        self._delay = first
        self._cap = cap
        self._max_retry_after = max_retry_after

    def next(self, retry_after: str | None = None) -> float:
        """The time to wait before the next attempt (and advance the backoff)."""
        told = ascii_int(retry_after)
        wait = min(float(told), self._max_retry_after) if told is not None else random.uniform(0, self._delay)  # noqa: S311 - jitter
        self._delay = min(self._delay * 2, self._cap)
        return wait


# ----- proxies -----

_LOOPBACK_NAMES = ("localhost", "localhost.localdomain")


def _is_loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _env(environ: Mapping[str, str], name: str) -> str:
    """An environment setting by its lower- or upper-case name (lower case first, as curl reads them)."""
    return (environ.get(name.lower()) or environ.get(name.upper()) or "").strip()


def _no_proxy_match(rule: str, host: str, port: int) -> bool:
    rule = rule.strip().lower()
    if not rule:
        return False
    if rule == "*":
        return True
    rule_port: int | None = None
    if rule.startswith("["):  # [v6] or [v6]:port
        inside, _, rest = rule[1:].partition("]")
        rule, rule_port = inside, ascii_int(rest[1:]) if rest.startswith(":") else None
    elif rule.count(":") == 1:
        name, _, digits = rule.partition(":")
        if ascii_int(digits) is not None:
            rule, rule_port = name, ascii_int(digits)
    if rule_port is not None and rule_port != port:
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is not None:
        try:
            return address in ipaddress.ip_network(rule, strict=False)
        except ValueError:
            return False
    rule = rule.lstrip(".")
    return host == rule or host.endswith("." + rule)


def proxy_for(url: str, environ: Mapping[str, str] | None = None, *, proxy_loopback: bool = False) -> str | None:
    """The proxy URL a request to `url` goes through, or None for a direct connection."""
    env = os.environ if environ is None else environ
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    port = parts.port or (443 if parts.scheme == "https" else 80)
    if not proxy_loopback and _is_loopback(host):
        return None
    proxy = _env(env, f"{parts.scheme}_proxy") or _env(env, "all_proxy")
    if not proxy:
        return None
    if any(_no_proxy_match(rule, host, port) for rule in _env(env, "no_proxy").replace(" ", ",").split(",")):
        return None
    return proxy if "://" in proxy else "http://" + proxy


# ----- TLS -----


def ssl_context(verify: bool | str = True, environ: Mapping[str, str] | None = None) -> ssl.SSLContext:
    """A client TLS context: `verify` a CA file, True for the environment's bundle or the system store,
    False for no verification (loopback tests only)."""
    env = os.environ if environ is None else environ
    if verify is False:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    if isinstance(verify, str):
        return ssl.create_default_context(cafile=verify)
    bundle = env.get("REQUESTS_CA_BUNDLE") or env.get("CURL_CA_BUNDLE") or env.get("SSL_CERT_FILE")
    if bundle:
        if os.path.isdir(bundle):
            return ssl.create_default_context(capath=bundle)
        return ssl.create_default_context(cafile=bundle)
    if env.get("SSL_CERT_DIR"):
        return ssl.create_default_context(capath=env["SSL_CERT_DIR"])
    return ssl.create_default_context()


# ----- responses -----


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

    def names(self) -> list[str]:
        return list(self._items)

    def __getitem__(self, name: str) -> str:
        return self._items[name.lower()]


class Response:
    def __init__(self, url: str, raw: urllib3.BaseHTTPResponse, *, stream: bool, guard: _Guard | None = None) -> None:
        self.url = url
        self.status_code = raw.status
        self.headers = Headers(list(raw.headers.items()))
        self._raw = raw
        self._guard = guard
        self._content: bytes | None = None
        self._eof = False
        if not stream:
            self._content = self._read(MAX_BODY)

    def _finish(self) -> None:
        """The body was read to its end (or given up): its deadline no longer applies. Cut off by it
        instead, what was read may be short and the connection is dead."""
        if self._guard is not None:
            _WATCHDOG.disarm(self._guard)
            if self._guard.fired:
                self._eof = True
                self._raw.close()
                self._raw.release_conn()
                raise self._guard.error()

    def _chunk(self, size: int) -> bytes:
        try:
            data = self._raw.read(size, decode_content=False)
        except (u3.HTTPError, *HttpError) as exc:
            if self._guard is not None and self._guard.fired:
                self._finish()
            if isinstance(exc, u3.HTTPError):
                raise _standard(exc) from None
            raise
        if not data:
            self._eof = True
            self._finish()
        return data

    def _read(self, limit: int) -> bytes:
        data = bytearray()
        while len(data) <= limit and (chunk := self._chunk(min(limit + 1 - len(data), 1 << 20))):
            data += chunk
        if len(data) > limit:
            self.close()
            raise http.client.HTTPException(f"{self.url}: the body is larger than {limit} bytes")
        self._eof = True
        self._finish()
        self._raw.release_conn()
        return bytes(data)

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
        return self._content is not None or self._eof

    def drain(self, limit: int) -> bool:
        """Read and drop the rest of the body if it is at most `limit` bytes; True when the connection is reusable."""
        try:
            self._read(limit)
        except HttpError:
            return False
        return True

    def close(self) -> None:
        """Drop the connection (an unread or oversized body)."""
        self._eof = True
        if self._guard is not None:
            _WATCHDOG.disarm(self._guard)
        self._raw.close()
        self._raw.release_conn()

    def iter_content(self, size: int) -> Iterator[bytes]:
        if self._content is not None:
            yield self._content
            return
        while chunk := self._chunk(size):
            yield chunk
        self._finish()
        self._raw.release_conn()


def _standard(exc: BaseException, proxy: str | None = None) -> BaseException:
    """The standard-library exception behind one of urllib3's, so callers tell causes apart as before."""
    if isinstance(exc, u3.ProxyError):
        why = exc.original_error if isinstance(exc.original_error, BaseException) else exc
        if isinstance(why, u3.NewConnectionError):
            why = why.__cause__ if isinstance(why.__cause__, OSError) else why
        return TransportError(f"the proxy ({proxy or 'from the environment'}) failed: {why}")
    if isinstance(exc, u3.SSLError):
        tls = exc.args[0] if exc.args else None
        return tls if isinstance(tls, ssl.SSLError) else ssl.SSLError(str(exc))
    if isinstance(exc, u3.NewConnectionError):
        cause = exc.__cause__ or exc.__context__
        return cause if isinstance(cause, OSError) else ConnectionError(str(exc))
    if isinstance(exc, (u3.ConnectTimeoutError, u3.ReadTimeoutError)):
        return TimeoutError(str(exc))
    if isinstance(exc, u3.ProtocolError):
        original = exc.args[1] if len(exc.args) > 1 else None
        if isinstance(original, (OSError, http.client.HTTPException)):
            return original
        return http.client.HTTPException(str(exc))
    if isinstance(exc, u3.HTTPError):
        return TransportError(f"{type(exc).__name__}: {exc}")
    return exc


def _bare(proxy: str) -> str:
    """A proxy URL without its credentials (they go in Proxy-Authorization, never in a message)."""
    parts = urlsplit(proxy)
    return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")


_STALE = (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError)


class Session:
    """Pooled keep-alive connections (thread-safe), direct or through the environment's proxy."""

    def __init__(
        self, *, verify: bool | str = True, environ: Mapping[str, str] | None = None, proxy_loopback: bool = False
    ) -> None:
        self.headers: dict[str, str] = {}
        self._verify = verify
        self._env = dict(os.environ if environ is None else environ)
        self._proxy_loopback = proxy_loopback
        self._managers: dict[tuple[str | None, bool], urllib3.PoolManager] = {}
        self._guard = threading.Lock()
        self._local = threading.local()
        self._context: ssl.SSLContext | None = None

    def _manager(self, proxy: str | None, tls: bool) -> urllib3.PoolManager:
        """The pool for one proxy (or none); a TLS context (loading the CA store costs start-up time) only
        for pools that speak TLS."""
        with self._guard:
            manager = self._managers.get((proxy, tls))
            if manager is None:
                if tls and self._context is None:
                    self._context = ssl_context(self._verify, self._env)
                context = self._context if tls else None
                if proxy is None:
                    manager = urllib3.PoolManager(num_pools=16, maxsize=8, ssl_context=context)
                else:
                    parts = urlsplit(proxy)
                    headers = None
                    if parts.username is not None:
                        user = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
                        headers = {"Proxy-Authorization": "Basic " + base64.b64encode(user.encode()).decode()}
                    manager = urllib3.ProxyManager(
                        _bare(proxy), num_pools=16, maxsize=8, proxy_headers=headers, ssl_context=context
                    )
                manager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}
                self._managers[(proxy, tls)] = manager
            return manager

    def proxy(self, url: str) -> str | None:
        return proxy_for(url, self._env, proxy_loopback=self._proxy_loopback)

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
        if params:
            url += ("&" if "?" in url else "?") + urlencode(params)
        sent = {**self.headers, **(headers or {})}
        if auth is not None:
            sent["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        # A caller that did not read the last body (a 404, a challenge): drain a small one, else drop it.
        previous: Response | None = getattr(self._local, "last", None)
        self._local.last = None
        if previous is not None and not previous.done() and not previous.drain(64 * 1024):
            previous.close()
        proxy = self.proxy(url)
        manager = self._manager(proxy, url.startswith("https:") or (proxy or "").startswith("https:"))
        guard = _Guard(url.split("?", 1)[0], timeout)
        _WATCHDOG.arm(guard)
        try:
            response = self._attempts(manager, method, url, sent, data, guard, stream, proxy)
        except BaseException:
            _WATCHDOG.disarm(guard)
            raise
        self._local.last = response
        return response

    def _attempts(
        self,
        manager: urllib3.PoolManager,
        method: str,
        url: str,
        sent: dict[str, str],
        data: bytes | None,
        guard: _Guard,
        stream: bool,
        proxy: str | None,
    ) -> Response:
        for attempt in (1, 2):  # a kept-alive connection the server closed is retried once on a fresh one
            remaining = guard.deadline - time.monotonic()
            if remaining <= 0:
                raise guard.error()
            _CURRENT.guard = guard
            try:
                raw = manager.urlopen(
                    method,
                    url,
                    body=data,
                    headers=sent,
                    timeout=urllib3.Timeout(connect=remaining, read=remaining),
                    retries=False,
                    redirect=False,
                    preload_content=False,
                    decode_content=False,
                )
            except (u3.HTTPError, *HttpError) as exc:
                guard.check()
                if not isinstance(exc, u3.HTTPError):
                    raise
                error = _standard(exc, _bare(proxy) if proxy else None)
                if attempt == 1 and isinstance(error, _STALE):
                    guard.conn = None
                    continue
                raise error from None
            finally:
                _CURRENT.guard = None
            response = Response(url, raw, stream=stream and method != "HEAD", guard=guard)
            if method == "HEAD" and not response.drain(0):
                response.close()
            return response
        raise TransportError("unreachable")

    def get(self, url: str, **kw: Any) -> Response:
        return self.request("GET", url, **kw)
