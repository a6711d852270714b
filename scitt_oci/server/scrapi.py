"""SCRAPI routes (keys, issuers, registration, entries) and the auditors' routes (checkpoint,
consistency). Each handler translates HTTP to one `TransparencyService` call and back."""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from scitt_oci import b64url
from scitt_oci.cose import cbor
from scitt_oci.cose import keys as cose_keys
from scitt_oci.errors import StoreUnavailable
from scitt_oci.log.policy import Rejection, RejectionKind
from scitt_oci.log.sequencer import Overloaded
from scitt_oci.log.service import Accepted, ConsistencyError, NotAccepted, Outcome, Registered, TransparencyService
from scitt_oci.server import offloop
from scitt_oci.server.bodies import client_gone, read_limited
from scitt_oci.server.guards import Settings, authorised, limited, unauthorised
from scitt_oci.server.metrics import Metrics
from scitt_oci.server.problems import problem, unavailable

COSE = "application/cose"
CBOR = "application/cbor"
JSON = "application/json"
ISSUERS_PATH = "/.well-known/scitt-oci/issuers"
REGISTRATION_PATH = "/entries"
# The HTTP status of each kind of registration refusal (the log names the kind; 400 for any other).
REJECTION_STATUS = {RejectionKind.TOO_LARGE: 413}
MAX_TREE_SIZE = 2**63 - 1  # what the stores hold (a signed 64-bit integer)

log = logging.getLogger("scitt_oci.server")


@dataclass(frozen=True)
class Issuer:
    """An identity (CWT iss) and the public keys statements under it are signed with."""

    iss: str
    keys: tuple[cose_keys.CoseKey, ...]


def entry_path(eid: bytes) -> str:
    return f"/entries/{eid.hex()}"


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def accepts(request: Request, offered_type: str) -> bool:
    accept = request.headers.get("accept")
    if not accept:
        return True
    offered = {a.split(";", 1)[0].strip().lower() for a in accept.split(",")}
    major = offered_type.split("/", 1)[0]
    return bool(offered & {offered_type, f"{major}/*", "*/*"})


def tree_size_param(text: str) -> int:
    """A tree size from a query string: ASCII digits only (int() would take "١٢" and "+1"), in store range."""
    if not (text.isascii() and text.isdigit()) or len(text) > 19 or int(text) > MAX_TREE_SIZE:
        raise ValueError(text)
    return int(text)


def _pending(eid: bytes) -> Response:
    return Response(status_code=202, headers={"Location": entry_path(eid), "Retry-After": "1"})


def _kid_candidates(text: str) -> list[bytes]:
    """The kid as given, as hex (the form the CLI prints) and as base64url (as SCRAPI requires)."""
    candidates = [text.encode()]
    with contextlib.suppress(ValueError):
        candidates.append(bytes.fromhex(text))
    with contextlib.suppress(ValueError):
        candidates.append(b64url.decode(text))
    return candidates


class Scrapi:
    """The handlers of SCRAPI and the auditors' routes over one service."""

    def __init__(
        self, service: TransparencyService, settings: Settings, metrics: Metrics, issuers: Sequence[Issuer] = ()
    ) -> None:
        self.service = service
        self.settings = settings
        self.metrics = metrics
        self._by_status: dict[int, Any] = {}  # the registrations counter's child per status, looked up once
        self.registration = Registration(self)  # POST /entries, an ASGI app
        self.issuers_body = json.dumps(
            {"issuers": [{"iss": i.iss, "keys": [k.to_jwk() for k in i.keys]} for i in issuers]}, indent=2
        ).encode()

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/.well-known/scitt-keys", self.key_set, methods=["GET"]),
            Route("/.well-known/scitt-keys/{kid}", self.one_key, methods=["GET"]),
            Route(ISSUERS_PATH, self.issuer_set, methods=["GET"]),
            # An ASGI endpoint (not a request handler); `app.Shortcut` also serves it ahead of routing.
            Route(REGISTRATION_PATH, self.registration, methods=["POST"]),
            Route("/entries/{entry_id}", self.get_entry, methods=["GET"]),
            Route("/checkpoint", self.checkpoint, methods=["GET"]),
            Route("/consistency", self.consistency, methods=["GET"]),
        ]

    # ----- registration -----
    async def register(self, scope: Scope, receive: Receive, send: Send) -> None:
        """POST /entries as plain ASGI: the busiest route answers its 201 without Starlette's per-request
        objects (a Response, and the routing and exception layers around it), a third of the HTTP cost
        of a registration once the statement's check is done."""
        started = time.monotonic()
        try:
            answer = await self._register(Request(scope, receive), started)
        except ClientDisconnect:
            await client_gone(Request(scope), ClientDisconnect())
            return
        if isinstance(answer, Registered):  # the usual answer, sent without a Response object
            status = 201
            await send({"type": "http.response.start", "status": status, "headers": _created_headers(answer)})
            await send({"type": "http.response.body", "body": answer.receipt})
        else:
            response = _pending(answer.entry_id) if isinstance(answer, Accepted) else answer
            await response(scope, receive, send)
            status = response.status_code
        self.metrics.latency.observe(time.monotonic() - started)
        counter = self._by_status.get(status)
        if counter is None:
            counter = self._by_status[status] = self.metrics.registrations.labels(str(status))
        counter.inc()

    async def _register(self, request: Request, started: float) -> Outcome | Response:
        statement = await self._admit(request)
        if isinstance(statement, Response):
            return statement
        wait = self.settings.wait_seconds - (time.monotonic() - started)
        try:
            # Inline: a worker pool measured no faster here (the GIL is the bottleneck, not the ECDSA check).
            outcome = await self.service.register_async(statement, wait)
        except Rejection as exc:
            return problem(REJECTION_STATUS.get(exc.kind, 400), exc.title, exc.detail)
        except Overloaded as exc:
            return problem(429, "Too Many Requests", f"the log is busy ({exc}); retry shortly", retry_after=1)
        except NotAccepted:
            return problem(
                503, "Service Unavailable", "the log could not store the statement; retry later", retry_after=5
            )
        except StoreUnavailable as exc:  # the database is restarting or failing over: one line, no traceback
            log.warning("POST %s: %s", REGISTRATION_PATH, exc)
            return unavailable(exc)
        return outcome

    async def _admit(self, request: Request) -> bytes | Response:
        """The statement of an authorised, unthrottled POST with the right media type and size, or why not."""
        if not authorised(self.settings, request):
            return unauthorised()
        if (limit := limited(self.settings, request)) is not None:
            return limit
        given = media_type(request)
        if given != COSE:
            return problem(
                415, "Unsupported Media Type", f"POST /entries takes {COSE}, not {given or 'no content type'}"
            )
        body = await read_limited(request, self.settings.max_body)
        if body is None:
            return problem(413, "Payload Too Large", f"the body may be at most {self.settings.max_body} bytes")
        return body

    async def get_entry(self, request: Request) -> Response:
        if (limit := limited(self.settings, request)) is not None:
            return limit
        text = request.path_params["entry_id"]
        try:
            eid = bytes.fromhex(text)
        except ValueError:
            eid = b""
        if len(eid) != 32:
            return problem(400, "Malformed request", f"entry id {text[:80]!r} is not 64 hexadecimal characters")
        body, pending = self.service.recent_receipt(eid), False
        if body is None:  # not in memory: from the database, beside the event loop
            body, pending = await offloop.read(lambda: self._lookup(eid), what="the log store")
        if body is not None:
            return Response(body, media_type=COSE, headers={"Location": entry_path(eid)})
        if pending:
            return _pending(eid)
        return problem(404, "Not Found", f"receipt with entry id {eid.hex()} is not known to this service")

    def _lookup(self, eid: bytes) -> tuple[bytes | None, bool]:
        """The entry's receipt, or whether it is accepted and not yet integrated."""
        body = self.service.receipt(eid)
        return body, body is None and self.service.pending(eid)

    # ----- keys and issuers -----
    async def key_set(self, request: Request) -> Response:
        if not accepts(request, CBOR):
            return problem(406, "Not Acceptable", f"keys are served as {CBOR}")
        return Response(cose_keys.dump_cose_key_set(self.service.keys()), media_type=CBOR)

    async def one_key(self, request: Request) -> Response:
        for kid in _kid_candidates(request.path_params["kid"]):
            key = self.service.find_key(kid)
            if key is not None:
                return Response(cbor.dumps(key.to_cose()), media_type=CBOR)
        return problem(404, "No such key", "No key could be found for this kid value")

    async def issuer_set(self, request: Request) -> Response:
        if not accepts(request, JSON):
            return problem(406, "Not Acceptable", f"issuers are served as {JSON}")
        return Response(self.issuers_body, media_type=JSON)

    # ----- auditors -----
    async def checkpoint(self, request: Request) -> Response:
        body = await offloop.read(self.service.checkpoint, what="the log store")
        if body is None:
            return problem(404, "Not Found", "the log is empty: there is no tree head yet")
        return Response(body, media_type=COSE, headers={"Cache-Control": "no-store"})

    async def consistency(self, request: Request) -> Response:
        try:
            old = tree_size_param(request.query_params["from"])
            new_text = request.query_params.get("to")
            new = tree_size_param(new_text) if new_text is not None else None
        except (KeyError, ValueError):
            return problem(
                400,
                "Malformed request",
                f"give ?from=OLD_SIZE and optionally &to=NEW_SIZE as decimal integers from 0 to {MAX_TREE_SIZE}",
            )
        try:
            proof = await offloop.read(lambda: self.service.consistency(old, new), what="the log store")
            return Response(proof, media_type=COSE)
        except ConsistencyError as exc:
            return problem(404, "Not Found", str(exc))


class Registration:
    """POST /entries as an ASGI app (Starlette routes an object that is not a function to it as one)."""

    def __init__(self, scrapi: Scrapi) -> None:
        self.scrapi = scrapi

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.scrapi.register(scope, receive, send)


def _created_headers(registered: Registered) -> list[tuple[bytes, bytes]]:
    """The headers of a 201 with its receipt, as `Response(..., media_type=COSE, headers=Location)` writes them."""
    return [
        (b"content-length", str(len(registered.receipt)).encode()),
        (b"content-type", COSE.encode()),
        (b"location", entry_path(registered.entry_id).encode()),
    ]
