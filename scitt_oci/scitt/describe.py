"""Human- and JSON-friendly views of statements and receipts, for `statement inspect`."""

from __future__ import annotations

import datetime as dt
from typing import Any

import cbor2

from scitt_oci.cose import algorithms, cbor, headers, sign1
from scitt_oci.cose.sign1 import Sign1
from scitt_oci.errors import ScittOciError
from scitt_oci.scitt import receipt as receipt_mod
from scitt_oci.scitt.transparent import TransparentStatement


def plain(value: Any) -> Any:
    """A JSON-safe copy of a decoded CBOR value: bytes become hex strings."""
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, cbor2.CBORTag):
        return {"tag": value.tag, "value": plain(value.value)}
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def _label(label: Any, names: dict[int, str]) -> str:
    name = names.get(label) if isinstance(label, int) else None
    return f"{name} ({label})" if name else str(label)


def header(h: dict[Any, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for label, value in h.items():
        if label == headers.ALG and isinstance(value, int) and value in algorithms.ALGORITHMS:
            shown: Any = f"{algorithms.ALGORITHMS[value].name} ({value})"
        elif label == headers.CWT_CLAIMS and isinstance(value, dict):
            shown = {_label(k, headers.CLAIM_NAMES): plain(v) for k, v in value.items()}
        elif label == headers.X5CHAIN:
            shown = f"{len(value) if isinstance(value, list) else 1} certificate(s)"
        elif label == headers.RECEIPTS and isinstance(value, list):
            shown = f"{len(value)} receipt(s)"
        elif label == headers.VDP and isinstance(value, dict):
            shown = {
                str(k): [plain(_try_loads(p)) for p in (v if isinstance(v, list) else [v])] for k, v in value.items()
            }
        else:
            shown = plain(value)
        out[_label(label, headers.NAMES)] = shown
    return out


def _try_loads(p: Any) -> Any:
    if isinstance(p, bytes):
        try:
            return cbor.loads(p)
        except ScittOciError:
            return p
    return p


def message(m: Sign1) -> dict[str, Any]:
    return {
        "protected": header(m.protected),
        "unprotected": header(m.unprotected),
        "payload": None if m.payload is None else {"length": len(m.payload), "hex": m.payload[:64].hex()},
        "signature": {"length": len(m.signature)},
    }


def transparent_statement(ts: TransparentStatement) -> dict[str, Any]:
    out = message(ts.statement.message)
    receipts = []
    for raw in ts.receipts:
        try:
            r, _vds = receipt_mod.decode(raw)
            receipts.append(message(r))
        except ScittOciError as exc:
            receipts.append({"error": exc.diagnostics()})
    out["receipts"] = receipts
    unknown = sign1.unknown_critical(ts.statement.message.protected)
    if unknown:
        warning = (
            f"critical header labels {unknown} are not understood by scitt-oci: "
            "verification will refuse this statement (RFC 9052: it must not be processed)"
        )
        return {"warning": warning, **out}
    return out
