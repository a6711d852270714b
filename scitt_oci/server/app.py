"""The ASGI application: SCRAPI (keys, entries), checkpoints and consistency, metrics and health.

The routes live in `scrapi` and `operations`; this module assembles them with the error handlers
and the lifespan. Routes translate HTTP to `TransparencyService` calls and back; they hold no log logic.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from scitt_oci.errors import ScittOciError, StoreUnavailable
from scitt_oci.log.service import TransparencyService
from scitt_oci.server import problems
from scitt_oci.server.bodies import CLIENT_GONE, ExpectContinue
from scitt_oci.server.guards import RateLimiter, Settings
from scitt_oci.server.metrics import Metrics
from scitt_oci.server.operations import Operations
from scitt_oci.server.problems import problem
from scitt_oci.server.scrapi import ISSUERS_PATH, REGISTRATION_PATH, Issuer, Scrapi

__all__ = ["ISSUERS_PATH", "Issuer", "Metrics", "RateLimiter", "Settings", "create_app"]

log = logging.getLogger("scitt_oci.server")

Hooks = tuple[Callable[[], None], Callable[[], None]]


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    titles = {404: "Not Found", 405: "Method Not Allowed"}
    return problem(
        exc.status_code, titles.get(exc.status_code, "Error"), f"{request.method} {request.url.path}: {exc.detail}"
    )


async def unavailable(request: Request, exc: Exception) -> Response:
    """The database is restarting, failing over or stalled: one line in the log, no traceback, a 503.
    (A handler of its own class: Starlette re-raises what reaches the `Exception` handler to the server,
    which logs it again with its traceback.)"""
    log.warning("%s %s: %s", request.method, request.url.path, exc)
    return problems.unavailable(exc)


async def server_error(request: Request, exc: Exception) -> Response:
    if isinstance(exc, StoreUnavailable):  # raised past the exception layer (a middleware's own call)
        return await unavailable(request, exc)
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    detail = str(exc) if isinstance(exc, ScittOciError) else "the service failed to answer; see its log"
    return problem(500, "Internal Server Error", detail)


class Shortcut:
    """One route's requests straight to its ASGI endpoint, ahead of Starlette's exception layer and router
    (which still route the path for any other method: a 405). Middleware added to the app later (the
    plain-HTTP credentials guard) and the server-error handler still wrap it."""

    def __init__(self, app: ASGIApp, method: str, path: str, endpoint: ASGIApp) -> None:
        self.app, self.method, self.path, self.endpoint = app, method, path, endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == self.path and scope["method"] == self.method:
            await self.endpoint(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def _lifespan(hooks: Hooks | None) -> Callable[[Starlette], contextlib.AbstractAsyncContextManager[None]]:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if hooks:
            hooks[0]()
        try:
            yield
        finally:
            if hooks:
                hooks[1]()

    return lifespan


def create_app(
    service: TransparencyService,
    settings: Settings,
    metrics: Metrics | None = None,
    *,
    extra_routes: Sequence[BaseRoute] = (),
    hooks: Hooks | None = None,
    readiness: Callable[[], str | None] = lambda: None,
    scrape: Callable[[], None] = lambda: None,
    issuers: Sequence[Issuer] = (),
) -> Starlette:
    """`hooks` (start, stop) run in the app's lifespan (multi-process serving); `readiness` names what is not
    ready (or None); `scrape` refreshes extra gauges before /metrics answers; `issuers` are published at
    ISSUERS_PATH (the identities and public keys this service's watcher signs statements with)."""
    metrics = metrics or Metrics()
    scrapi = Scrapi(service, settings, metrics, issuers)
    routes = [
        *scrapi.routes(),
        *Operations(service, metrics, readiness, scrape).routes(),
        *extra_routes,
    ]
    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(ExpectContinue),
            Middleware(Shortcut, method="POST", path=REGISTRATION_PATH, endpoint=scrapi.registration),
        ],
        exception_handlers={
            **CLIENT_GONE,
            HTTPException: http_error,
            StoreUnavailable: unavailable,
            Exception: server_error,
        },
        lifespan=_lifespan(hooks),
    )
    # SCRAPI's paths are exact: `/entries/` is not found, rather than a 307 to an address built from the
    # client's Host header (Starlette's default).
    app.router.redirect_slashes = False
    return app
