"""A SCRAPI client: register statements, fetch receipts, keys, checkpoints and consistency proofs.

Tolerant of draft -10 (303 then 302 while pending) and -11 (202 then 202/204 while pending).
Every call has a total deadline: `timeout` from its start (`max_wait` for a registration and the wait
for its receipt). Transient failures (connection errors, 5xx, 429) are retried a bounded number of
times with the transport's `Backoff` (the one retry policy: jittered exponential waits, Retry-After
honoured), but never past the deadline: an attempt gets only the time left, and a retry whose wait
would end after the deadline is not made. A Location is followed only on the service's own origin.
A bearer token is sent only over https, or over plain http straight to a loopback address (no proxy):
otherwise the client refuses to be built (`netutil.clear_text_refusal`, the registry client's rule).
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

from scitt_oci import jsonin, transport
from scitt_oci.cose import cbor, keys
from scitt_oci.cose.keys import CoseKey
from scitt_oci.errors import ClientError as ClientError  # defined there since #12; kept importable here
from scitt_oci.errors import MalformedError, ScittOciError
from scitt_oci.netutil import clear_text_refusal

COSE = "application/cose"
PENDING = {202, 204, 302}
# Receipts, key sets, checkpoints and problem details are a few KiB; nothing we read from a service
# may be larger than the CBOR decoder accepts anyway.
MAX_RESPONSE_BYTES = cbor.DEFAULT_LIMITS.max_bytes


@dataclass(frozen=True)
class PublishedIssuer:
    """An identity (CWT iss) a service's watcher signs statements as, with its public keys."""

    iss: str
    keys: tuple[CoseKey, ...]


ISSUERS_PATH = "/.well-known/scitt-oci/issuers"
MAX_ISSUERS_BYTES = 1 << 20


def _no_answer(method: str, url: str, exc: BaseException) -> ClientError:
    """A precise error for a request that got no HTTP answer at all."""
    text = str(exc)
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(url))
    if isinstance(exc, ssl.SSLCertVerificationError):
        reason = getattr(exc, "verify_message", None) or text[:120]
        return ClientError(f"the TLS certificate of {origin} is not trusted ({reason})", cause="tls-untrusted")
    if isinstance(exc, ssl.SSLError):
        if "WRONG_VERSION_NUMBER" in text or "record layer failure" in text or "packet length too long" in text:
            return ClientError(f"{origin} does not speak TLS (it answers plain HTTP)", cause="tls-plain")
        return ClientError(f"TLS with {origin} failed: {text[:200]}", cause="tls")
    if isinstance(exc, TimeoutError):
        return ClientError(f"{method} {url}: no answer in time", cause="timeout")
    if isinstance(exc, transport.TransportError):
        return ClientError(f"{method} {url}: {text[:200]}")
    if isinstance(exc, OSError):
        why = "Connection refused" if isinstance(exc, ConnectionRefusedError) else "no connection"
        why = next((w for w in ("Name or service not known", "No route to host") if w in text), why)
        return ClientError(f"cannot connect to {origin} ({why})", cause="connect")
    return ClientError(f"{method} {url}: {type(exc).__name__}: {text[:200]}")


class _HeaderView(Mapping[str, str]):
    """The transport's case-insensitive headers as a read-only mapping."""

    def __init__(self, headers: transport.Headers) -> None:
        self._headers = headers

    def __getitem__(self, name: str) -> str:
        return self._headers[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._headers.names())

    def __len__(self) -> int:
        return len(self._headers.names())


@dataclass(frozen=True)
class Registered:
    receipt: bytes
    location: str | None


@dataclass(frozen=True)
class Answer:
    """A service's answer, its body read in full but never beyond the client's size limit."""

    status_code: int
    headers: Mapping[str, str]
    content: bytes
    url: str


def _problem(response: Answer) -> tuple[str | None, str | None]:
    if "concise-problem-details+cbor" not in response.headers.get("content-type", ""):
        return None, None
    try:
        body = cbor.loads(response.content)
    except ScittOciError:
        return None, None
    if not isinstance(body, dict):
        return None, None
    title, detail = body.get(-1), body.get(-2)
    return (title if isinstance(title, str) else None, detail if isinstance(detail, str) else None)


def _retry_after(response: Answer, default: float) -> float:
    """How long a pending answer asks us to wait before polling again (ASCII digits only)."""
    told = transport.ascii_int(response.headers.get("retry-after"))
    return float(told) if told is not None else default


class ScrapiClient:
    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        timeout: float = 10.0,
        max_attempts: int = 5,
        max_wait: float = 60.0,
        verify_tls: bool | str = True,
        session: transport.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ClientError(f"transparency service URL {base_url!r} must be http(s)://host[:port]")
        self.base = base_url.rstrip("/") + "/"
        self._origin = (parts.scheme, parts.netloc)
        self._session = session or transport.Session(verify=verify_tls)
        self._session.headers["User-Agent"] = "scitt-oci"
        if token:
            # Refused here, before any request: a bearer token never crosses the network in clear.
            refusal = clear_text_refusal(self.base, self._session.proxy(self.base), "the bearer token")
            if refusal:
                raise ClientError(f"transparency service {base_url}: {refusal}")
            self._session.headers["Authorization"] = f"Bearer {token}"
        self._timeout = timeout
        self._attempts = max_attempts
        self._max_wait = max_wait
        self._sleep = sleep
        self._max_response = max_response_bytes

    # ----- plumbing -----
    def _url(self, path: str) -> str:
        url = urljoin(self.base, path.lstrip("/") if not path.startswith("http") else path)
        parts = urlsplit(url)
        if (parts.scheme, parts.netloc) != self._origin:
            raise ClientError(f"the service pointed at {url}, outside its own origin; not followed")
        return url

    def _read(self, response: transport.Response, method: str, deadline: float) -> Answer:
        """The body of `response`, refusing one larger than the limit before buffering it (by its
        Content-Length, or once more than the limit has arrived) or one still arriving at the deadline."""
        what = f"{method} {response.url}"
        limit = self._max_response
        try:
            declared = transport.ascii_int(response.headers.get("content-length"))
            if declared is not None and declared > limit:
                raise ClientError(
                    f"{what}: the answer is {declared} bytes; at most {limit} are read from a transparency service"
                )
            chunks: list[bytes] = []
            size = 0
            for chunk in response.iter_content(64 * 1024):
                size += len(chunk)
                if size > limit:
                    raise ClientError(
                        f"{what}: the answer is more than {limit} bytes; at most {limit} are read from a "
                        "transparency service"
                    )
                if time.monotonic() > deadline:
                    raise ClientError(
                        f"{what}: no answer in time (the body was still arriving after {size} bytes)", cause="timeout"
                    )
                chunks.append(chunk)
            return Answer(response.status_code, _HeaderView(response.headers), b"".join(chunks), response.url)
        except transport.HttpError as exc:
            raise _no_answer(method, response.url, exc) from None
        finally:
            if not response.done():
                response.close()

    def _request(
        self,
        method: str,
        path: str,
        *,
        deadline: float | None = None,
        headers: Mapping[str, str] | None = None,
        data: bytes | None = None,
    ) -> Answer:
        """One call, retried with `Backoff` while its deadline (`timeout` from now unless given) allows."""
        url = self._url(path)
        end = time.monotonic() + self._timeout if deadline is None else deadline
        backoff = transport.Backoff()
        attempt = 0
        while True:
            attempt += 1
            left = end - time.monotonic()
            if left <= 0:
                raise ClientError(f"{method} {url}: no answer in time", cause="timeout")
            try:
                raw = self._session.request(
                    method, url, headers=headers, data=data, timeout=min(self._timeout, left), stream=True
                )
            except transport.HttpError as exc:
                if isinstance(exc, ssl.SSLError) or not self._pause(attempt, backoff.next(), end):
                    raise _no_answer(method, url, exc) from None
                continue
            response = self._read(raw, method, end)
            if response.status_code < 500 and response.status_code != 429:
                return response
            if not self._pause(attempt, backoff.next(response.headers.get("retry-after")), end):
                return response

    def _pause(self, attempt: int, wait: float, deadline: float) -> bool:
        """Wait before attempt `attempt + 1`; False (no retry) when the attempts are spent or the wait
        would end at or past the deadline."""
        if attempt >= self._attempts or time.monotonic() + wait >= deadline:
            return False
        self._sleep(wait)
        return True

    def _fail(self, response: Answer, what: str) -> ClientError:
        title, detail = _problem(response)
        text = f"{what}: HTTP {response.status_code}"
        if title:
            text += f" {title}"
        if detail:
            text += f": {detail}"
        return ClientError(text, response.status_code, title)

    # ----- SCRAPI -----
    def keys(self) -> list[CoseKey]:
        response = self._request("GET", "/.well-known/scitt-keys", headers={"Accept": "application/cbor"})
        if response.status_code != 200:
            raise self._fail(response, "fetching the service keys")
        try:
            return keys.load_cose_key_set(response.content)
        except ScittOciError as exc:
            raise ClientError(f"the service keys are not a COSE Key Set: {exc}") from None

    def issuers(self) -> list[PublishedIssuer]:
        """The identities and keys a scitt-oci service's watcher signs with (ISSUERS_PATH; docs/api.md)."""
        response = self._request("GET", ISSUERS_PATH, headers={"Accept": "application/json"})
        if response.status_code != 200:
            raise self._fail(response, "fetching the published issuers")
        try:
            doc = jsonin.load_object(response.content, "the published issuers", MAX_ISSUERS_BYTES)
            entries = doc.get("issuers")
            if not isinstance(entries, list):
                raise MalformedError('the published issuers document has no "issuers" list')
            out = []
            for i, entry in enumerate(entries):
                if not isinstance(entry, dict) or not isinstance(entry.get("iss"), str) or not entry["iss"]:
                    raise MalformedError(f"issuers[{i}] needs a non-empty text iss")
                jwks = entry.get("keys")
                if not isinstance(jwks, list) or not jwks:
                    raise MalformedError(f"issuers[{i}] needs a non-empty keys list (JWKs)")
                out.append(PublishedIssuer(entry["iss"], tuple(keys.from_jwk(k) for k in jwks)))
        except ScittOciError as exc:
            raise ClientError(f"{self.base}{ISSUERS_PATH.lstrip('/')}: {exc}") from None
        return out

    def register(self, statement: bytes) -> Registered:
        """Register `statement` and wait for its receipt, all within max_wait."""
        deadline = time.monotonic() + self._max_wait
        response = self._request(
            "POST", "/entries", deadline=deadline, data=statement, headers={"Content-Type": COSE, "Accept": COSE}
        )
        if response.status_code in (200, 201):
            return Registered(response.content, response.headers.get("location"))
        if response.status_code in (202, 303):
            location = response.headers.get("location")
            if not location:
                raise ClientError(f"the service answered {response.status_code} without a Location")
            receipt = self._poll(location, deadline, _retry_after(response, 1.0))
            return Registered(receipt, location)
        raise self._fail(response, "registration")

    def wait_for(self, location: str, *, first_delay: float = 0.0) -> bytes:
        """The receipt at `location`, polled until it is there, for at most max_wait."""
        return self._poll(location, time.monotonic() + self._max_wait, first_delay)

    def _poll(self, location: str, deadline: float, delay: float) -> bytes:
        while True:
            if delay:
                self._sleep(min(delay, max(0.0, deadline - time.monotonic())))
            if time.monotonic() >= deadline:
                raise ClientError(f"no receipt at {location} after {self._max_wait:.0f} s", cause="timeout")
            response = self._request("GET", location, deadline=deadline, headers={"Accept": COSE})
            if response.status_code == 200:
                return response.content
            if response.status_code not in PENDING:
                raise self._fail(response, f"waiting for the receipt at {location}")
            delay = min(_retry_after(response, 1.0), 10.0)

    def receipt(self, entry_id: str) -> bytes | None:
        response = self._request("GET", f"/entries/{entry_id}", headers={"Accept": COSE})
        if response.status_code == 200:
            return response.content
        if response.status_code in PENDING or response.status_code == 404:
            return None
        raise self._fail(response, f"fetching the receipt of {entry_id}")

    def checkpoint(self) -> bytes:
        response = self._request("GET", "/checkpoint", headers={"Accept": COSE})
        if response.status_code != 200:
            raise self._fail(response, "fetching the checkpoint")
        return response.content

    def consistency(self, old_size: int, new_size: int) -> bytes:
        response = self._request("GET", f"/consistency?from={old_size}&to={new_size}", headers={"Accept": COSE})
        if response.status_code != 200:
            raise self._fail(response, f"fetching the consistency proof from {old_size} to {new_size}")
        return response.content
