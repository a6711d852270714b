"""The C2SP tlog-tiles read API under /tlog/ (checkpoint, hash tiles, entry bundles, vkey), for the
service's own log or for a mirror of another one. Errors are short text/plain bodies: the clients of
these endpoints (mirrors, witnesses, monitors) speak text."""

from __future__ import annotations

import functools
import gzip

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from scitt_oci.errors import StoreUnavailable
from scitt_oci.log.tiled import TlogSource
from scitt_oci.replication.witness import Witness
from scitt_oci.server import offloop
from scitt_oci.server.bodies import read_limited
from scitt_oci.tlog import tiles

TEXT = "text/plain; charset=utf-8"
OCTETS = "application/octet-stream"
IMMUTABLE = "public, max-age=31536000, immutable"
PARTIAL = "public, max-age=3600"  # a partial tile's bytes never change, but it may be dropped later
MUTABLE = "public, max-age=2"


def text_error(status: int, message: str) -> Response:
    return Response(message.rstrip("\n") + "\n", status_code=status, media_type=TEXT)


def unavailable(exc: StoreUnavailable) -> Response:
    answer = text_error(503, f"{exc}; retry later")
    answer.headers["Retry-After"] = "5"
    return answer


def _gzip_ok(request: Request) -> bool:
    offered = request.headers.get("accept-encoding", "")
    return any(part.split(";", 1)[0].strip().lower() == "gzip" for part in offered.split(","))


def tlog_routes(source: TlogSource, prefix: str = "/tlog") -> list[BaseRoute]:
    async def checkpoint(request: Request) -> Response:
        try:
            body = await offloop.read(source.checkpoint, what="the log store")
        except StoreUnavailable as exc:
            return unavailable(exc)
        if body is None:
            return text_error(404, "the log is empty: there is no checkpoint yet")
        return Response(body, media_type=TEXT, headers={"Cache-Control": MUTABLE})

    async def vkey(request: Request) -> Response:
        return Response(source.vkey() + "\n", media_type=TEXT)

    async def tile(request: Request) -> Response:
        path = "tile/" + request.path_params["path"]
        try:
            ref = tiles.parse_tile_path(path)
        except tiles.TilePathError as exc:
            return text_error(400, str(exc))
        if ref.level == tiles.ENTRIES:
            read = functools.partial(source.bundle, ref.index, ref.width)
        else:
            read = functools.partial(source.tile, ref.level, ref.index, ref.width)
        try:
            body = await offloop.read(read, what="the log store")
        except StoreUnavailable as exc:
            return unavailable(exc)
        if body is None:
            return text_error(404, f"{path}: the published tree does not hold this tile")
        headers = {"Cache-Control": PARTIAL if ref.partial else IMMUTABLE}
        if ref.level == tiles.ENTRIES and _gzip_ok(request) and len(body) > 512:
            body = gzip.compress(body, compresslevel=5, mtime=0)
            headers["Content-Encoding"] = "gzip"
        headers["Vary"] = "Accept-Encoding"
        return Response(body, media_type=OCTETS, headers=headers)

    return [
        Route(f"{prefix}/checkpoint", checkpoint, methods=["GET"]),
        Route(f"{prefix}/vkey", vkey, methods=["GET"]),
        Route(prefix + "/tile/{path:path}", tile, methods=["GET"]),
    ]


MAX_ADD_CHECKPOINT = 64 * 1024  # old line, 63 proof lines and a checkpoint with many signatures


def witness_routes(witness: Witness, prefix: str = "/tlog/witness") -> list[BaseRoute]:
    async def add_checkpoint(request: Request) -> Response:
        body = await read_limited(request, MAX_ADD_CHECKPOINT)
        if body is None:
            return text_error(413, f"the request may be at most {MAX_ADD_CHECKPOINT} bytes")
        # The check-and-store transaction may wait for SQLite's write lock: off the event loop.
        answer = await run_in_threadpool(witness.add_checkpoint, body)
        return Response(answer.body, status_code=answer.status, media_type=answer.media_type)

    async def vkey(request: Request) -> Response:
        return Response(witness.vkey() + "\n", media_type=TEXT)

    return [
        Route(f"{prefix}/add-checkpoint", add_checkpoint, methods=["POST"]),
        Route(f"{prefix}/vkey", vkey, methods=["GET"]),
    ]
