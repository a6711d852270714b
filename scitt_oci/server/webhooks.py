"""Webhook routes: authenticate, parse, store in the inbox, answer 202. Errors are RFC 9457 problem JSON."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from scitt_oci.errors import ScittOciError, StoreUnavailable
from scitt_oci.server import offloop
from scitt_oci.server.bodies import read_limited
from scitt_oci.server.guards import bearer
from scitt_oci.server.problems import problem_json
from scitt_oci.watch.events import MAX_PAYLOAD_BYTES, PARSERS
from scitt_oci.watch.inbox import Inbox

log = logging.getLogger("scitt_oci.server")


def _bearer(request: Request, secret: str) -> bool:
    presented = bearer(request)
    return presented is not None and hmac.compare_digest(presented, secret.encode())


def _signed(request: Request, body: bytes, secret: str) -> bool:
    signature = request.headers.get("x-hub-signature-256", "")  # GitHub signs the body with the secret
    if signature.startswith("sha256="):
        expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(signature[7:].encode("utf-8", "replace"), expected.encode())
    return False


def _registry(request: Request, registries: list[str]) -> str | Response:
    """The watched registry the webhook is for (`?registry=`, needed when several are watched), or a 400."""
    name = request.query_params.get("registry")
    if name is None:
        if len(registries) != 1:
            return problem_json(
                400, "Bad Request", f"several registries are watched; add ?registry= one of {registries}"
            )
        return registries[0]
    if name not in registries:
        return problem_json(400, "Bad Request", f"registry {name!r} is not one this service watches")
    return name


async def _authentic_body(request: Request, secret: str) -> bytes | Response:
    """The body of a request that carries the secret, or the problem to answer.

    The secret is checked before the body is read: a bearer secret from the headers alone; a body
    signature (which needs the body) only when the request carries one."""
    by_bearer = _bearer(request, secret)
    if not by_bearer and not request.headers.get("x-hub-signature-256", "").startswith("sha256="):
        return problem_json(401, "Unauthorized", "the webhook secret is missing or wrong")
    body = await read_limited(request, MAX_PAYLOAD_BYTES)
    if body is None:
        return problem_json(413, "Payload Too Large", f"webhook payloads may be at most {MAX_PAYLOAD_BYTES} bytes")
    if not by_bearer and not _signed(request, body, secret):
        return problem_json(401, "Unauthorized", "the webhook secret is missing or wrong")
    return body


def webhook_routes(inbox: Inbox, registries: list[str], secret: str) -> list[Route]:
    async def receive(request: Request) -> Response:
        kind = request.path_params["kind"]
        parser = PARSERS.get(kind)
        if parser is None:
            return problem_json(404, "Not Found", f"no webhook format {kind!r} (known: {', '.join(PARSERS)})")
        body = await _authentic_body(request, secret)
        if isinstance(body, Response):
            return body
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if not (media_type.endswith("json") or media_type == ""):
            return problem_json(415, "Unsupported Media Type", f"webhooks take JSON, not {media_type}")
        name = _registry(request, registries)
        if isinstance(name, Response):
            return name
        try:
            events = parser(body, {k.lower(): v for k, v in request.headers.items()})
        except ScittOciError as exc:
            return problem_json(400, "Bad Request", f"not a {kind} payload: {exc}")
        # A durable write (fsync, or a PostgreSQL commit): off the event loop, which serves every other
        # request, and within a deadline: a redelivery of events stored after it is recognised as one.
        try:
            added = await offloop.write(lambda: inbox.add(name, events), what="the inbox") if events else 0
        except StoreUnavailable as exc:  # not stored (yet): the sender delivers again (registries retry a 5xx)
            log.warning("webhook %s: %s", kind, exc)
            return problem_json(503, "Service Unavailable", f"{exc}; deliver again later", retry_after=5)
        body_out = json.dumps({"received": len(events), "queued": added})
        return Response(body_out, status_code=202, media_type="application/json")

    return [Route("/webhooks/{kind}", receive, methods=["POST"])]
