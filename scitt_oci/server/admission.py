"""Admission's HTTP face: the Kubernetes validating and mutating webhooks and the Gatekeeper external-data
provider, as routes over the admission service (`verify/admission_service.py`).

The face authenticates clients (`ClientAuth`), refuses what is not a bounded JSON body, answers a body that
is not a review with a 400 and returns the documents the service builds; deciding (policy, cache,
deadline, tag pinning, deploy records, review limits) is the service's.
"""

from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from scitt_oci.errors import ScittOciError
from scitt_oci.server.bodies import CLIENT_GONE, ExpectContinue, read_limited
from scitt_oci.server.problems import problem_json
from scitt_oci.verify import admission as adm
from scitt_oci.verify.admission_service import Admission

__all__ = ["Admission", "ClientAuth", "admission_app", "admission_routes"]

log = logging.getLogger("scitt_oci.admission")


@dataclass(frozen=True)
class ClientAuth:
    """How admission clients authenticate: a certificate verified against the listener's client CA
    (the TLS handshake verified it; here it only has to be present) or a bearer token."""

    client_ca: bool = False
    tokens: tuple[str, ...] = ()

    @property
    def configured(self) -> bool:
        return self.client_ca or bool(self.tokens)

    def authenticated(self, request: Request) -> bool:
        if self.client_ca:
            tls = request.scope.get("extensions", {}).get("tls") or {}
            if tls.get("client_cert_chain"):
                return True
        scheme, _, presented = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and presented.strip():
            given = presented.strip().encode("utf-8", "replace")
            return any(hmac.compare_digest(given, t.encode()) for t in self.tokens)
        return False


async def _read(request: Request, client_auth: ClientAuth) -> bytes | Response:
    """The body of an admission request, or the 4xx refusing it: a client that does not authenticate
    (when authentication is configured; before its body is read), not JSON, or too large."""
    if client_auth.configured and not client_auth.authenticated(request):
        return problem_json(
            401,
            "Unauthorized",
            "admission clients authenticate with a client certificate signed by admission.client_ca "
            "or a bearer token from admission.token_files",
        )
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
        return problem_json(415, "Unsupported Media Type", "admission requests are application/json")
    body = await read_limited(request, adm.MAX_REVIEW_BYTES)
    if body is None:
        return problem_json(413, "Payload Too Large", f"admission requests may be at most {adm.MAX_REVIEW_BYTES} bytes")
    return body


def admission_routes(controller: Admission, auth: ClientAuth | None = None) -> list[Route]:
    """The admission routes. With `auth` configured, a client that does not authenticate is refused (401)
    before its body is read; without it every review is answered, and none is recorded as a deploy."""
    client_auth = auth or ClientAuth()

    def handler(mutate: bool) -> Any:
        async def review(request: Request) -> Response:
            body = await _read(request, client_auth)
            if isinstance(body, Response):
                return body
            authenticated = client_auth.configured  # _read() refused every client that did not authenticate
            try:
                return JSONResponse(await controller.review(body, mutate=mutate, authenticated=authenticated))
            except ScittOciError as exc:
                return problem_json(400, "Bad Request", str(exc))

        return review

    async def gatekeeper(request: Request) -> Response:
        body = await _read(request, client_auth)
        if isinstance(body, Response):
            return body
        try:
            return JSONResponse(await controller.gatekeeper(body))
        except ScittOciError as exc:
            return JSONResponse(adm.provider_response([], str(exc)), status_code=400)

    return [
        Route("/admission/validate", handler(False), methods=["POST"]),
        Route("/admission/mutate", handler(True), methods=["POST"]),
        Route("/gatekeeper/verify", gatekeeper, methods=["POST"]),
    ]


def admission_app(routes: list[Route]) -> Starlette:
    """The admission listener's application: the admission routes, /healthz, and problem JSON for the rest."""

    async def healthz(request: Request) -> Response:
        return Response(b"ok\n", media_type="text/plain")

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return problem_json(exc.status_code, "Error", f"{request.method} {request.url.path}: {exc.detail}")

    async def server_error(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return problem_json(500, "Internal Server Error", "the service failed to answer; see its log")

    return Starlette(
        routes=[*routes, Route("/healthz", healthz, methods=["GET"])],
        middleware=[Middleware(ExpectContinue)],
        exception_handlers={**CLIENT_GONE, HTTPException: http_error, Exception: server_error},
    )
