"""What every SCRAPI request passes first: bearer-token authorisation and a per-client rate limit."""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass, field

from starlette.requests import Request
from starlette.responses import Response

from scitt_oci.server.problems import problem


class RateLimiter:
    """A token bucket per client address."""

    def __init__(self, per_second: float, burst: int) -> None:
        self.per_second = per_second
        self.burst = burst
        self._buckets: dict[str, tuple[float, float]] = {}

    def allow(self, client: str) -> float:
        """0 if allowed, else the seconds to wait."""
        if self.per_second <= 0:
            return 0.0
        now = time.monotonic()
        tokens, last = self._buckets.get(client, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.per_second)
        if tokens < 1:
            self._buckets[client] = (tokens, now)
            return (1 - tokens) / self.per_second
        self._buckets[client] = (tokens - 1, now)
        if len(self._buckets) > 100_000:
            self._buckets.clear()
        return 0.0


@dataclass
class Settings:
    tokens: tuple[str, ...] = ()
    auth_required: bool = False
    wait_seconds: float = 3.0
    max_body: int = 64 * 1024
    rate_limiter: RateLimiter = field(default_factory=lambda: RateLimiter(0, 1))


def bearer(request: Request) -> bytes | None:
    """The bearer token a request presents (`Authorization: Bearer TOKEN`), or None."""
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not presented:
        return None
    return presented.strip().encode()


def authorised(settings: Settings, request: Request) -> bool:
    if not settings.auth_required and not settings.tokens:
        return True
    presented = bearer(request)
    return presented is not None and any(hmac.compare_digest(presented, t.encode()) for t in settings.tokens)


def unauthorised() -> Response:
    return problem(
        401,
        "Unauthorized",
        "registration needs a valid bearer token",
        headers={"WWW-Authenticate": 'Bearer realm="scitt-oci"'},
    )


def limited(settings: Settings, request: Request) -> Response | None:
    """A 429 answer when this client is over its rate, else None."""
    client = request.client.host if request.client else "unknown"
    wait = settings.rate_limiter.allow(client)
    if wait:
        return problem(
            429,
            "Too Many Requests",
            "this client sends requests faster than the service allows",
            retry_after=max(1, int(wait + 0.999)),
        )
    return None
