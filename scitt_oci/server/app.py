"""The ASGI application: SCRAPI (keys, entries), checkpoints and consistency, metrics and health.

Routes translate HTTP to `TransparencyService` calls and back; they hold no log logic.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from scitt_oci.cose import cbor
from scitt_oci.cose import keys as cose_keys
from scitt_oci.errors import ScittOciError
from scitt_oci.log.policy import Rejection
from scitt_oci.log.sequencer import Overloaded
from scitt_oci.log.service import ConsistencyError, TransparencyService
from scitt_oci.log.store import BatchResult, StoredHead
from scitt_oci.server.bodies import read_limited
from scitt_oci.server.problems import problem

log = logging.getLogger("scitt_oci.server")

COSE = "application/cose"
CBOR = "application/cbor"
JSON = "application/json"
ISSUERS_PATH = "/.well-known/scitt-oci/issuers"


@dataclass(frozen=True)
class Issuer:
    """An identity (CWT iss) and the public keys statements under it are signed with."""

    iss: str
    keys: tuple[cose_keys.CoseKey, ...]


def _exposition(registry: CollectorRegistry) -> CollectorRegistry:
    """With `--workers N` every worker writes its values to PROMETHEUS_MULTIPROC_DIR; a scrape then
    reports the sum over all workers, whichever answers."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return registry
    from prometheus_client import multiprocess

    combined = CollectorRegistry()
    multiprocess.MultiProcessCollector(combined)  # type: ignore[no-untyped-call]
    return combined


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.registrations = Counter(
            "scitt_registrations", "Registration requests by outcome", ["outcome"], registry=self.registry
        )
        self.latency = Histogram(
            "scitt_registration_seconds",
            "Time from request to answer for POST /entries",
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.batch_size = Histogram(
            "scitt_batch_entries",
            "Entries integrated per signed tree head",
            registry=self.registry,
            buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000),
        )
        self.commit_seconds = Histogram(
            "scitt_batch_commit_seconds",
            "Time to store and sign one batch",
            registry=self.registry,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
        )
        # multiprocess_mode: how `--workers N` combines the workers' values (ignored with one process)
        self.tree_size = Gauge("scitt_tree_size", "Entries in the log", registry=self.registry, multiprocess_mode="max")
        self.waiting = Gauge(
            "scitt_registrations_waiting",
            "Registrations not yet integrated",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.inbox = Gauge(
            "scitt_watch_events",
            "Registry events in the inbox by state (dead = dead-lettered)",
            ["state"],
            registry=self.registry,
            multiprocess_mode="max",
        )

    def observe_batch(self, result: BatchResult, seconds: float) -> None:
        self.commit_seconds.observe(seconds)
        if result.head is not None:
            self.batch_size.observe(len(result.integrated))
            self.tree_size.set(result.head.tree_size)


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


def _entry_path(eid: bytes) -> str:
    return f"/entries/{eid.hex()}"


async def _read_body(request: Request, limit: int) -> bytes | Response:
    body = await read_limited(request, limit)
    return problem(413, "Payload Too Large", f"the body may be at most {limit} bytes") if body is None else body


def _media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def _accepts(request: Request, media_type: str) -> bool:
    accept = request.headers.get("accept")
    if not accept:
        return True
    offered = {a.split(";", 1)[0].strip().lower() for a in accept.split(",")}
    major = media_type.split("/", 1)[0]
    return bool(offered & {media_type, f"{major}/*", "*/*"})


MAX_TREE_SIZE = 2**63 - 1  # what the stores hold (a signed 64-bit integer)


def _tree_size_param(text: str) -> int:
    """A tree size from a query string: ASCII digits only (int() would take "١٢" and "+1"), in store range."""
    if not (text.isascii() and text.isdigit()) or len(text) > 19 or int(text) > MAX_TREE_SIZE:
        raise ValueError(text)
    return int(text)


def create_app(
    service: TransparencyService,
    settings: Settings,
    metrics: Metrics | None = None,
    *,
    extra_routes: Sequence[BaseRoute] = (),
    hooks: tuple[Callable[[], None], Callable[[], None]] | None = None,
    readiness: Callable[[], str | None] = lambda: None,
    scrape: Callable[[], None] = lambda: None,
    issuers: Sequence[Issuer] = (),
) -> Starlette:
    """`hooks` (start, stop) run in the app's lifespan (multi-process serving); `readiness` names what is not
    ready (or None); `scrape` refreshes extra gauges before /metrics answers; `issuers` are published at
    ISSUERS_PATH (the identities and public keys this service's watcher signs statements with)."""
    issuers_body = json.dumps(
        {"issuers": [{"iss": i.iss, "keys": [k.to_jwk() for k in i.keys]} for i in issuers]}, indent=2
    ).encode()
    metrics = metrics or Metrics()

    def authorised(request: Request) -> bool:
        if not settings.auth_required and not settings.tokens:
            return True
        scheme, _, presented = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not presented:
            return False
        return any(hmac.compare_digest(presented.strip().encode(), t.encode()) for t in settings.tokens)

    def limited(request: Request) -> Response | None:
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

    def receipt_response(eid: bytes, status: int, index: int | None = None, head: StoredHead | None = None) -> Response:
        body = service.receipt(eid, index, head)
        if body is None:
            return problem(404, "Not Found", f"no receipt for entry {eid.hex()}")
        return Response(body, status_code=status, media_type=COSE, headers={"Location": _entry_path(eid)})

    async def register(request: Request) -> Response:
        started = time.monotonic()
        response = await _register(request, started)
        metrics.latency.observe(time.monotonic() - started)
        metrics.registrations.labels(str(response.status_code)).inc()
        return response

    async def _register(request: Request, started: float) -> Response:
        if not authorised(request):
            return problem(
                401,
                "Unauthorized",
                "registration needs a valid bearer token",
                headers={"WWW-Authenticate": 'Bearer realm="scitt-oci"'},
            )
        if (limit := limited(request)) is not None:
            return limit
        if _media_type(request) != COSE:
            return problem(
                415,
                "Unsupported Media Type",
                f"POST /entries takes {COSE}, not {_media_type(request) or 'no content type'}",
            )
        body = await _read_body(request, settings.max_body)
        if isinstance(body, Response):
            return body
        try:
            # Inline: a worker pool measured no faster here (the GIL is the bottleneck, not the ECDSA check).
            submission = service.submit(body)
        except Rejection as exc:
            return problem(exc.status, exc.title, exc.detail)
        except Overloaded as exc:
            return problem(429, "Too Many Requests", f"the log is busy ({exc}); retry shortly", retry_after=1)
        eid = submission.entry_id
        reg = submission.registration
        if reg is None:
            return receipt_response(eid, 201)
        integrated = reg.integrated
        remaining = settings.wait_seconds - (time.monotonic() - started)
        if remaining > 0:
            # Integrated implies accepted (durable), so the common case waits once.
            with contextlib.suppress(Exception):  # includes TimeoutError; decided below
                await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(integrated)), timeout=remaining)
        if integrated.done() and integrated.exception() is None:
            return receipt_response(eid, 201, *integrated.result())
        try:
            # Accepted means durable: only then may we answer 202.
            await asyncio.wait_for(
                asyncio.shield(asyncio.wrap_future(reg.accepted)), timeout=max(0.0, 60 - (time.monotonic() - started))
            )
        except Exception as exc:  # includes TimeoutError
            log.warning("registration %s not accepted: %s", eid.hex(), exc)
            return problem(
                503, "Service Unavailable", "the log could not store the statement; retry later", retry_after=5
            )
        if integrated.done():
            if integrated.exception() is None:
                return receipt_response(eid, 201, *integrated.result())
            # integration failed after acceptance: it will be retried from the backlog
            log.error("integration of %s failed", eid.hex(), exc_info=integrated.exception())
        return Response(status_code=202, headers={"Location": _entry_path(eid), "Retry-After": "1"})

    async def get_entry(request: Request) -> Response:
        if (limit := limited(request)) is not None:
            return limit
        text = request.path_params["entry_id"]
        try:
            eid = bytes.fromhex(text)
        except ValueError:
            eid = b""
        if len(eid) != 32:
            return problem(400, "Malformed request", f"entry id {text[:80]!r} is not 64 hexadecimal characters")
        body = service.receipt(eid)
        if body is not None:
            return Response(body, media_type=COSE, headers={"Location": _entry_path(eid)})
        if service.pending(eid):
            return Response(status_code=202, headers={"Location": _entry_path(eid), "Retry-After": "1"})
        return problem(404, "Not Found", f"receipt with entry id {eid.hex()} is not known to this service")

    async def key_set(request: Request) -> Response:
        if not _accepts(request, CBOR):
            return problem(406, "Not Acceptable", f"keys are served as {CBOR}")
        return Response(cose_keys.dump_cose_key_set(service.keys()), media_type=CBOR)

    async def one_key(request: Request) -> Response:
        text = request.path_params["kid"]
        candidates = [text.encode()]
        with contextlib.suppress(ValueError):  # the hex form the CLI prints everywhere
            candidates.append(bytes.fromhex(text))
        with contextlib.suppress(binascii.Error, ValueError):  # base64url, as SCRAPI requires
            candidates.append(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        for kid in candidates:
            key = service.find_key(kid)
            if key is not None:
                return Response(cbor.dumps(key.to_cose()), media_type=CBOR)
        return problem(404, "No such key", "No key could be found for this kid value")

    async def issuer_set(request: Request) -> Response:
        if not _accepts(request, JSON):
            return problem(406, "Not Acceptable", f"issuers are served as {JSON}")
        return Response(issuers_body, media_type=JSON)

    async def checkpoint(request: Request) -> Response:
        body = service.checkpoint()
        if body is None:
            return problem(404, "Not Found", "the log is empty: there is no tree head yet")
        return Response(body, media_type=COSE, headers={"Cache-Control": "no-store"})

    async def consistency(request: Request) -> Response:
        try:
            old = _tree_size_param(request.query_params["from"])
            new_text = request.query_params.get("to")
            new = _tree_size_param(new_text) if new_text is not None else None
        except (KeyError, ValueError):
            return problem(
                400,
                "Malformed request",
                f"give ?from=OLD_SIZE and optionally &to=NEW_SIZE as decimal integers from 0 to {MAX_TREE_SIZE}",
            )
        try:
            return Response(service.consistency(old, new), media_type=COSE)
        except ConsistencyError as exc:
            return problem(404, "Not Found", str(exc))

    async def metrics_route(request: Request) -> Response:
        metrics.waiting.set(service.sequencer.queued)
        metrics.tree_size.set(service.store.size())  # from the store: the same whichever worker answers
        scrape()
        return Response(generate_latest(_exposition(metrics.registry)), media_type=CONTENT_TYPE_LATEST)

    async def healthz(request: Request) -> Response:
        return Response(b"ok\n", media_type="text/plain")

    async def readyz(request: Request) -> Response:
        try:
            service.store.size()
        except Exception as exc:
            return problem(503, "Service Unavailable", f"the log store is not readable: {type(exc).__name__}")
        if not service.sequencer.alive:
            return problem(503, "Service Unavailable", "the sequencer is not running")
        not_ready = readiness()
        if not_ready:
            return problem(503, "Service Unavailable", not_ready)
        return Response(b"ready\n", media_type="text/plain")

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        titles = {404: "Not Found", 405: "Method Not Allowed"}
        return problem(
            exc.status_code, titles.get(exc.status_code, "Error"), f"{request.method} {request.url.path}: {exc.detail}"
        )

    async def server_error(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        detail = str(exc) if isinstance(exc, ScittOciError) else "the service failed to answer; see its log"
        return problem(500, "Internal Server Error", detail)

    routes = [
        Route("/.well-known/scitt-keys", key_set, methods=["GET"]),
        Route("/.well-known/scitt-keys/{kid}", one_key, methods=["GET"]),
        Route(ISSUERS_PATH, issuer_set, methods=["GET"]),
        Route("/entries", register, methods=["POST"]),
        Route("/entries/{entry_id}", get_entry, methods=["GET"]),
        Route("/checkpoint", checkpoint, methods=["GET"]),
        Route("/consistency", consistency, methods=["GET"]),
        Route("/metrics", metrics_route, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        *extra_routes,
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if hooks:
            hooks[0]()
        try:
            yield
        finally:
            if hooks:
                hooks[1]()

    return Starlette(
        routes=routes, exception_handlers={HTTPException: http_error, Exception: server_error}, lifespan=lifespan
    )
