"""Offline verification of a Transparent Statement against a trust policy.

Pure: bytes and a policy in, a `VerificationResult` out. No network, no clock unless passed in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from scitt_oci.errors import ScittOciError, UntrustedKeyError
from scitt_oci.oci.reference import Digest
from scitt_oci.scitt import profile, receipt, transparent
from scitt_oci.scitt import statement as statement_mod
from scitt_oci.scitt.reasons import Reason, VerificationFailure
from scitt_oci.scitt.statement import SignedStatement
from scitt_oci.verify.trust import TrustPolicy


@dataclass(frozen=True)
class Finding:
    reason: Reason
    message: str

    def to_json(self) -> dict[str, str]:
        return {"code": self.reason.value, "message": self.message}


@dataclass
class ReceiptResult:
    index: int
    valid: bool
    finding: Finding | None = None
    service: str | None = None
    vds: int | None = None
    entry_rule: str | None = None
    tree_size: int | None = None  # vds 1: from the proof; covered by the signature only when tree_size_signed
    leaf_index: int | None = None  # vds 1: from the proof, never signed (only the root is)
    root: str | None = None
    issuer: str | None = None
    tree_size_signed: bool | None = None  # vds 1 only

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"index": self.index, "valid": self.valid}
        for name in ("service", "vds", "entry_rule", "tree_size", "tree_size_signed", "leaf_index", "root", "issuer"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.finding:
            out["reasons"] = [self.finding.to_json()]
        return out


@dataclass
class VerificationResult:
    findings: list[Finding] = field(default_factory=list)
    receipts: list[ReceiptResult] = field(default_factory=list)
    issuer: str | None = None
    subject: str | None = None
    trusted_issuer: str | None = None
    event: profile.OciEvent | None = None
    services: list[str] = field(default_factory=list)
    iat: int | None = None

    @property
    def valid(self) -> bool:
        return not self.findings

    @property
    def decision(self) -> str:
        return "VALID" if self.valid else "INVALID"

    @property
    def reason_codes(self) -> list[str]:
        return [f.reason.value for f in self.findings]

    def fail(self, reason: Reason, message: str) -> None:
        self.findings.append(Finding(reason, message))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "decision": self.decision,
            "reasons": [f.to_json() for f in self.findings],
            "statement": {"issuer": self.issuer, "subject": self.subject, "trusted_issuer": self.trusted_issuer},
            "receipts": [r.to_json() for r in self.receipts],
            "services": self.services,
        }
        if self.event is not None:
            out["statement"]["event"] = {
                "kind": self.event.kind.value,
                "subject": str(self.event.subject),
                "recorded": str(self.event.recorded_digest),
                **dict(self.event.details),
            }
        return out


def _check_issuer(statement: SignedStatement, policy: TrustPolicy, result: VerificationResult) -> None:
    if policy.issuers is None:
        try:
            statement_mod.verify(statement, trust_embedded=True)
        except UntrustedKeyError:
            result.fail(
                Reason.UNTRUSTED_ISSUER,
                "the statement carries no certificate and the policy names no issuer keys to check its signature with",
            )
        except ScittOciError as exc:
            result.fail(Reason.BAD_STATEMENT_SIGNATURE, f"the issuer's signature does not verify: {exc}")
        return
    untrusted: list[str] = []
    for issuer in policy.issuers:
        if issuer.iss is not None and statement.issuer != issuer.iss:
            untrusted.append(f"{issuer.name}: iss is {statement.issuer!r}, not {issuer.iss!r}")
            continue
        try:
            statement_mod.verify(statement, keys=issuer.keys, x509_roots=issuer.x509_roots)
        except UntrustedKeyError as exc:
            untrusted.append(f"{issuer.name}: {exc}")
            continue
        except ScittOciError as exc:
            result.fail(
                Reason.BAD_STATEMENT_SIGNATURE, f"the signature of issuer {issuer.name!r} does not verify: {exc}"
            )
            return
        result.trusted_issuer = issuer.name
        return
    result.fail(Reason.UNTRUSTED_ISSUER, "no trusted issuer signed this statement (" + "; ".join(untrusted) + ")")


def _check_receipts(
    statement: SignedStatement,
    receipts: Sequence[bytes],
    policy: TrustPolicy,
    result: VerificationResult,
    required: int,
) -> None:
    keys = policy.service_keys
    for i, raw in enumerate(receipts):
        try:
            verified = receipt.verify_receipt(raw, statement, keys)
        except VerificationFailure as exc:
            result.receipts.append(ReceiptResult(i, False, Finding(exc.reason, exc.message)))
            continue
        service = policy.service_of(verified.key)
        result.receipts.append(
            ReceiptResult(
                i,
                True,
                None,
                service,
                verified.vds,
                verified.entry_rule,
                verified.tree_size,
                verified.leaf_index,
                verified.root.hex(),
                verified.issuer,
                verified.size_signed if verified.vds == 1 else None,
            )
        )
        if service not in result.services:
            result.services.append(service)
    if not receipts:
        result.fail(Reason.NO_RECEIPTS, "the statement carries no receipts and none were supplied")
        return
    if len(result.services) >= required:
        return
    for r in result.receipts:
        if r.finding is not None:
            result.fail(r.finding.reason, f"receipt {r.index}: {r.finding.message}")
    if result.services or all(r.finding is None for r in result.receipts):
        result.fail(
            Reason.TOO_FEW_RECEIPTS,
            f"receipts from {len(result.services)} trusted service(s) verify; the policy requires {required}",
        )


def verify_transparent_statement(
    data: bytes,
    policy: TrustPolicy,
    *,
    detached_receipts: Sequence[bytes] = (),
    digest: Digest | str | None = None,
    required_receipts: int | None = None,
) -> VerificationResult:
    """Verify a Transparent Statement (or a Signed Statement with `detached_receipts`).

    With `digest`, the statement must also be a scitt-oci profile statement about that image.
    """
    result = VerificationResult()
    try:
        parsed = transparent.parse(data)
    except ScittOciError as exc:
        result.fail(Reason.MALFORMED, f"the statement cannot be read: {exc}")
        return result
    statement = parsed.statement
    result.issuer, result.subject = statement.issuer, statement.subject
    result.iat = statement.claims.iat if statement.claims else None
    if digest is not None:
        try:
            result.event = profile.check_about(statement, digest)
        except VerificationFailure as exc:
            result.fail(exc.reason, exc.message)
    _check_issuer(statement, policy, result)
    _check_receipts(
        statement,
        list(parsed.receipts) + list(detached_receipts),
        policy,
        result,
        required_receipts or policy.required_receipts,
    )
    return result
