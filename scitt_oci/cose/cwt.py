"""CWT Claims in a COSE protected header (RFC 9597, label 15; claims from RFC 8392)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from scitt_oci.cose import headers
from scitt_oci.errors import MalformedError


def _numeric_date(value: object, name: str) -> int:
    """A NumericDate, untagged (RFC 8392) or tagged with CBOR tag 1 (as Microsoft's statements carry it)."""
    if isinstance(value, dt.datetime):  # cbor2 turns tag 1 into an aware datetime
        return int(value.timestamp())
    if type(value) is int:
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MalformedError(f"CWT claim {name} must be a NumericDate (seconds since the epoch)")
    if value != value or value in (float("inf"), float("-inf")):
        raise MalformedError(f"CWT claim {name} must be a finite number")
    return int(value)


@dataclass(frozen=True)
class CwtClaims:
    """The claims SCITT reads; everything else is kept in `extra`."""

    iss: str | None = None
    sub: str | None = None
    iat: int | None = None
    exp: int | None = None
    nbf: int | None = None
    extra: dict[Any, Any] = field(default_factory=dict)

    def to_map(self) -> dict[Any, Any]:
        out: dict[Any, Any] = {}
        if self.iss is not None:
            out[headers.CWT_ISS] = self.iss
        if self.sub is not None:
            out[headers.CWT_SUB] = self.sub
        for label, value in ((headers.CWT_EXP, self.exp), (headers.CWT_NBF, self.nbf), (headers.CWT_IAT, self.iat)):
            if value is not None:
                out[label] = value
        out.update(self.extra)
        return out

    @classmethod
    def from_map(cls, m: object) -> CwtClaims:
        if not isinstance(m, dict):
            raise MalformedError("CWT Claims (15) must be a map")
        iss = m.get(headers.CWT_ISS)
        sub = m.get(headers.CWT_SUB)
        if iss is not None and not isinstance(iss, str):
            raise MalformedError("CWT claim iss (1) must be a text string")
        if sub is not None and not isinstance(sub, str):
            raise MalformedError("CWT claim sub (2) must be a text string")
        iat, exp, nbf = m.get(headers.CWT_IAT), m.get(headers.CWT_EXP), m.get(headers.CWT_NBF)
        known = (iss is not None) + (sub is not None) + (iat is not None) + (exp is not None) + (nbf is not None)
        return cls(
            iss=iss,
            sub=sub,
            # an int is _numeric_date's answer for itself: no call for the usual untagged date
            iat=iat if iat is None or type(iat) is int else _numeric_date(iat, "iat"),
            exp=exp if exp is None or type(exp) is int else _numeric_date(exp, "exp"),
            nbf=nbf if nbf is None or type(nbf) is int else _numeric_date(nbf, "nbf"),
            extra={k: v for k, v in m.items() if k not in _KNOWN} if len(m) > known else {},
        )


_KNOWN = frozenset({headers.CWT_ISS, headers.CWT_SUB, headers.CWT_IAT, headers.CWT_EXP, headers.CWT_NBF})


def claims_of(protected: dict[Any, Any]) -> CwtClaims | None:
    """The CWT Claims of a protected header, or None when label 15 is absent."""
    if headers.CWT_CLAIMS not in protected:
        return None
    return CwtClaims.from_map(protected[headers.CWT_CLAIMS])
