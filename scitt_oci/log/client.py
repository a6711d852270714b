"""A SCRAPI client: register statements, fetch receipts, keys, checkpoints and consistency proofs.

Tolerant of draft -10 (303 then 302 while pending) and -11 (202 then 202/204 while pending);
every call has a timeout; transient failures (connection errors, 5xx, 429) are retried a bounded
number of times with jittered exponential backoff, honouring Retry-After. A Location is followed
only on the service's own origin.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import requests

from scitt_oci.cose import cbor, keys
from scitt_oci.cose.keys import CoseKey
from scitt_oci.errors import ScittOciError

COSE = "application/cose"
PENDING = {202, 204, 302}


class ClientError(ScittOciError):
    """The service refused or failed a request; carries its status and problem details."""

    def __init__(self, message: str, status: int | None = None, title: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.title = title


@dataclass(frozen=True)
class Registered:
    receipt: bytes
    location: str | None


def _problem(response: requests.Response) -> tuple[str | None, str | None]:
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


def _retry_after(response: requests.Response | None, default: float) -> float:
    if response is None:
        return default
    value = response.headers.get("retry-after", "")
    # ASCII digits only: isdigit() also takes "²", which float() refuses.
    return float(value) if value.isascii() and value.isdigit() and len(value) <= 9 else default


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
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ClientError(f"transparency service URL {base_url!r} must be http(s)://host[:port]")
        self.base = base_url.rstrip("/") + "/"
        self._origin = (parts.scheme, parts.netloc)
        self._session = session or requests.Session()
        self._session.headers["User-Agent"] = "scitt-oci"
        if token:
            self._session.headers["Authorization"] = f"Bearer {token}"
        self._timeout = timeout
        self._attempts = max_attempts
        self._max_wait = max_wait
        self._verify = verify_tls
        self._sleep = sleep

    # ----- plumbing -----
    def _url(self, path: str) -> str:
        url = urljoin(self.base, path.lstrip("/") if not path.startswith("http") else path)
        parts = urlsplit(url)
        if (parts.scheme, parts.netloc) != self._origin:
            raise ClientError(f"the service pointed at {url}, outside its own origin; not followed")
        return url

    def _request(self, method: str, path: str, **kw: object) -> requests.Response:
        url = self._url(path)
        delay = 0.2
        last: requests.Response | None = None
        for attempt in range(1, self._attempts + 1):
            try:
                response = self._session.request(
                    method,
                    url,
                    timeout=self._timeout,
                    allow_redirects=False,
                    verify=self._verify,
                    **kw,  # type: ignore[arg-type]
                )
            except requests.RequestException as exc:
                if attempt == self._attempts:
                    raise ClientError(f"{method} {url}: {type(exc).__name__}: {exc}") from None
                self._sleep(random.uniform(0, delay))  # noqa: S311 - jitter, not a secret
                delay = min(delay * 2, 5.0)
                continue
            if response.status_code < 500 and response.status_code != 429:
                return response
            last = response
            if attempt < self._attempts:
                self._sleep(min(_retry_after(response, random.uniform(0, delay)), 30.0))  # noqa: S311
                delay = min(delay * 2, 5.0)
        assert last is not None
        return last

    def _fail(self, response: requests.Response, what: str) -> ClientError:
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

    def register(self, statement: bytes) -> Registered:
        """Register `statement` and wait (up to max_wait) for its receipt."""
        response = self._request("POST", "/entries", data=statement, headers={"Content-Type": COSE, "Accept": COSE})
        if response.status_code in (200, 201):
            return Registered(response.content, response.headers.get("location"))
        if response.status_code in (202, 303):
            location = response.headers.get("location")
            if not location:
                raise ClientError(f"the service answered {response.status_code} without a Location")
            return Registered(self.wait_for(location, first_delay=_retry_after(response, 1.0)), location)
        raise self._fail(response, "registration")

    def wait_for(self, location: str, *, first_delay: float = 0.0) -> bytes:
        deadline = time.monotonic() + self._max_wait
        delay = first_delay
        while True:
            if delay:
                self._sleep(min(delay, max(0.0, deadline - time.monotonic())))
            response = self._request("GET", location, headers={"Accept": COSE})
            if response.status_code == 200:
                return response.content
            if response.status_code not in PENDING:
                raise self._fail(response, f"waiting for the receipt at {location}")
            if time.monotonic() >= deadline:
                raise ClientError(f"no receipt at {location} after {self._max_wait:.0f} s")
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
