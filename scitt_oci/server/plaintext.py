"""Credentials never cross the network in clear: over plain HTTP, a client beyond loopback that sends a
bearer token, a webhook secret or a webhook body is refused (403) before anything is read or checked.

Behind a TLS-terminating proxy or service mesh the hop to the service is plain HTTP on purpose:
`http.allow_plain_http_credentials: true` leaves this guard out.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from scitt_oci.netutil import is_loopback_host
from scitt_oci.server.problems import problem_json

CREDENTIAL_HEADERS = (b"authorization", b"x-hub-signature-256")


class RefusePlainCredentials:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope.get("scheme") == "http":
            client = scope.get("client")
            host = client[0] if client else ""
            if not is_loopback_host(host):
                carries = any(name in CREDENTIAL_HEADERS for name, _ in scope.get("headers", ()))
                if carries or str(scope.get("path", "")).startswith("/webhooks/"):
                    response = problem_json(
                        403,
                        "Forbidden",
                        "bearer tokens and webhook secrets are not accepted over plain HTTP beyond loopback: "
                        "reach the service over HTTPS (tls_cert, tls_key); behind a TLS-terminating proxy set "
                        "http.allow_plain_http_credentials",
                    )
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)
