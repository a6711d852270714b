"""Webhook routes: authenticate, parse, store in the inbox, answer 202. Errors are RFC 9457 problem JSON."""

from __future__ import annotations

import hashlib
import hmac
import json

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from scitt_oci.errors import ScittOciError
from scitt_oci.server.bodies import read_limited
from scitt_oci.server.problems import problem_json
from scitt_oci.watch.events import MAX_PAYLOAD_BYTES, PARSERS
from scitt_oci.watch.inbox import Inbox


def webhook_routes(inbox: Inbox, registries: list[str], secret: str) -> list[Route]:
    def authorised(request: Request, body: bytes) -> bool:
        scheme, _, presented = request.headers.get("authorization", "").partition(" ")
        if (
            scheme.lower() == "bearer"
            and presented
            and hmac.compare_digest(presented.strip().encode(), secret.encode())
        ):
            return True
        signature = request.headers.get("x-hub-signature-256", "")  # GitHub signs the body with the secret
        if signature.startswith("sha256="):
            expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
            # As bytes: compare_digest refuses str with non-ASCII characters (a header may hold any).
            return hmac.compare_digest(signature[7:].encode(), expected.encode())
        return False

    async def receive(request: Request) -> Response:
        kind = request.path_params["kind"]
        parser = PARSERS.get(kind)
        if parser is None:
            return problem_json(404, "Not Found", f"no webhook format {kind!r} (known: {', '.join(PARSERS)})")
        body = await read_limited(request, MAX_PAYLOAD_BYTES)
        if body is None:
            return problem_json(413, "Payload Too Large", f"webhook payloads may be at most {MAX_PAYLOAD_BYTES} bytes")
        if not authorised(request, body):
            return problem_json(401, "Unauthorized", "the webhook secret is missing or wrong")
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if not (media_type.endswith("json") or media_type == ""):
            return problem_json(415, "Unsupported Media Type", f"webhooks take JSON, not {media_type}")
        name = request.query_params.get("registry")
        if name is None:
            if len(registries) != 1:
                return problem_json(
                    400, "Bad Request", f"several registries are watched; add ?registry= one of {registries}"
                )
            name = registries[0]
        elif name not in registries:
            return problem_json(400, "Bad Request", f"registry {name!r} is not one this service watches")
        try:
            events = parser(body, {k.lower(): v for k, v in request.headers.items()})
        except ScittOciError as exc:
            return problem_json(400, "Bad Request", f"not a {kind} payload: {exc}")
        added = inbox.add(name, events) if events else 0
        body_out = json.dumps({"received": len(events), "queued": added})
        return Response(body_out, status_code=202, media_type="application/json")

    return [Route("/webhooks/{kind}", receive, methods=["POST"])]
