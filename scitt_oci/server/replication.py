"""The replication faces that are not part of the service's own app: a mirror's read-only service
(`serve --data-dir DIR` where DIR holds a mirror). The service's own /tlog/ routes and the witness
routes are in tlog_routes; the composition from configuration is scitt_oci.runtime.replication."""

from __future__ import annotations

from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from scitt_oci.server.bodies import CLIENT_GONE, ExpectContinue
from scitt_oci.server.tlog_routes import tlog_routes


# ----- a mirror's own service: `serve --data-dir DIR` where DIR holds a mirror -----
def is_mirror(data_dir: Path) -> bool:
    from scitt_oci.replication.mirror import DB_NAME

    return (data_dir / DB_NAME).exists() and not (data_dir / "log.db").exists()


def mirror_app(data_dir: Path) -> Starlette:
    """The /tlog/ read API of a mirror, with the source's checkpoint as received; it reads the mirror's
    database on every request, so what a following `scitt-oci mirror` commits is served at once."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest

    from scitt_oci.replication.mirror import MirrorSource, MirrorStore

    source = MirrorSource(MirrorStore(data_dir))
    registry = CollectorRegistry()
    size = Gauge("scitt_mirror_tree_size", "Entries held by this mirror", registry=registry)
    forks = Gauge("scitt_mirror_forks", "Forks of the source detected (evidence kept)", registry=registry)

    async def metrics(request: Request) -> Response:
        held = source.store.held()
        size.set(held.size if held else 0)
        forks.set(len(source.store.forks()))
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    async def healthz(request: Request) -> Response:
        return Response(b"ok\n", media_type="text/plain")

    return Starlette(
        routes=[
            *tlog_routes(source),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", healthz, methods=["GET"]),
        ],
        middleware=[Middleware(ExpectContinue)],
        exception_handlers=dict(CLIENT_GONE),
    )
