"""Request bodies read with a limit: a declared or streamed size over it stops reading at once."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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


class ExpectContinue:
    """A request that waits for `100 Continue` and is answered without its body ever being asked for (a 401,
    415, 404, a declared size over the limit) is told the connection closes (RFC 9110 10.1.1): otherwise the
    server waits for a body the client will not send, and takes the client's next request for it. A body
    the app began to read (uvicorn then sent the 100) is read and dropped as usual, the connection kept:
    closing on unread data would reset it, and the client could lose the answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not any(
            name == b"expect" and value.lower() == b"100-continue" for name, value in scope["headers"]
        ):
            await self.app(scope, receive, send)
            return
        asked = False

        async def asking() -> Message:
            nonlocal asked
            asked = True
            return await receive()

        async def answering(message: Message) -> None:
            if message["type"] == "http.response.start" and not asked:
                message = {**message, "headers": [*message.get("headers", ()), (b"connection", b"close")]}
            await send(message)

        await self.app(scope, asking, answering)
