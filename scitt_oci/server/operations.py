"""Operations routes: Prometheus metrics, liveness and readiness."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from scitt_oci.errors import StoreUnavailable
from scitt_oci.log.service import TransparencyService
from scitt_oci.server import offloop
from scitt_oci.server.metrics import Metrics, exposition
from scitt_oci.server.problems import problem

READY_DEADLINE = 5.0  # below Kubernetes' default probe timeout budget (periodSeconds 10)


class Operations:
    def __init__(
        self,
        service: TransparencyService,
        metrics: Metrics,
        readiness: Callable[[], str | None],
        scrape: Callable[[], None],
    ) -> None:
        self.service = service
        self.metrics = metrics
        self.readiness = readiness  # what else is not ready (None: all is)
        self.scrape = scrape  # refreshes extra gauges before a scrape

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/metrics", self.metrics_route, methods=["GET"]),
            Route("/healthz", self.healthz, methods=["GET"]),
            Route("/readyz", self.readyz, methods=["GET"]),
        ]

    async def metrics_route(self, request: Request) -> Response:
        self.metrics.waiting.set(self.service.waiting)
        await offloop.read(self._scrape, what="the service's database")
        return Response(generate_latest(exposition(self.metrics.registry)), media_type=CONTENT_TYPE_LATEST)

    def _scrape(self) -> None:
        self.metrics.tree_size.set(self.service.store.size())  # from the store: the same whichever worker answers
        self.scrape()

    async def healthz(self, request: Request) -> Response:
        return Response(b"ok\n", media_type="text/plain")  # alive: the event loop answers (no database read)

    async def readyz(self, request: Request) -> Response:
        try:
            await offloop.read(self.service.store.size, what="the log store", deadline=READY_DEADLINE)
        except StoreUnavailable as exc:
            return problem(503, "Service Unavailable", f"the log store is not readable: {exc}")
        except Exception as exc:
            return problem(503, "Service Unavailable", f"the log store is not readable: {type(exc).__name__}")
        if not self.service.running:
            return problem(503, "Service Unavailable", "the sequencer is not running")
        not_ready = self.readiness()
        if not_ready:
            return problem(503, "Service Unavailable", not_ready)
        return Response(b"ready\n", media_type="text/plain")
