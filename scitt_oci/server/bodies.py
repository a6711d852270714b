"""Request bodies read with a limit: a declared or streamed size over it stops reading at once."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

log = logging.getLogger("scitt_oci.server")


async def read_limited(request: Request, limit: int) -> bytes | None:
    """The body, or None when its Content-Length or its streamed size exceeds `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


async def client_gone(request: Request, exc: Exception) -> Response:
    """A client that hung up before its body arrived: nothing failed here and nobody waits for an answer,
    so one debug line, not an error with a traceback (each one logged two, a flood anyone could cause)."""
    log.debug("client went away during %s %s", request.method, request.url.path)
    return Response(status_code=400)  # never delivered: what uvicorn logs if it must answer something


# The exception handler each app of this service installs beside its own.
CLIENT_GONE: Mapping[type[Exception], Callable[[Request, Exception], Awaitable[Response]]] = {
    ClientDisconnect: client_gone
}
