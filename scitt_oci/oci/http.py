"""The registry client's HTTP: the package's one transport (scitt_oci.transport), named here for the
registry client's callers."""

from __future__ import annotations

from scitt_oci.transport import (
    MAX_BODY,
    Backoff,
    DeadlineExceeded,
    Headers,
    HttpError,
    Response,
    Session,
    TransportError,
    ascii_int,
)

__all__ = [
    "MAX_BODY",
    "Backoff",
    "DeadlineExceeded",
    "Headers",
    "HttpError",
    "Response",
    "Session",
    "TransportError",
    "ascii_int",
]
