"""Error bodies: concise problem details (RFC 9290) in CBOR for SCRAPI, problem details (RFC 9457) in
JSON for the webhook and admission endpoints, whose callers speak JSON."""

from __future__ import annotations

import json

from starlette.responses import Response

from scitt_oci.cose import cbor

PROBLEM_TYPE = "application/concise-problem-details+cbor"
TITLE, DETAIL, RESPONSE_CODE = -1, -2, -4


def problem(
    status: int, title: str, detail: str, *, retry_after: int | None = None, headers: dict[str, str] | None = None
) -> Response:
    body = cbor.dumps({TITLE: title, DETAIL: detail, RESPONSE_CODE: status})
    out = dict(headers or {})
    if retry_after is not None:
        out["Retry-After"] = str(retry_after)
    return Response(body, status_code=status, media_type=PROBLEM_TYPE, headers=out)


def unavailable(exc: Exception) -> Response:
    """The answer while our database is out of reach or stalled: a 503 the client retries after 5 s."""
    return problem(503, "Service Unavailable", f"{exc}; retry later", retry_after=5)


def problem_json(status: int, title: str, detail: str, *, retry_after: int | None = None) -> Response:
    body = json.dumps({"type": "about:blank", "title": title, "status": status, "detail": detail})
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return Response(body, status_code=status, media_type="application/problem+json", headers=headers)
