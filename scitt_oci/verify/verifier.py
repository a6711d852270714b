"""Offline verification of a Transparent Statement against a trust policy.

Pure: bytes and a policy in, a `VerificationResult` out. No network, no clock unless passed in.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from scitt_oci.errors import MalformedError, ScittOciError, UntrustedKeyError
from scitt_oci.oci.reference import Digest
from scitt_oci.scitt import profile, receipt, transparent
from scitt_oci.scitt import statement as statement_mod
from scitt_oci.scitt.reasons import Reason, VerificationFailure
from scitt_oci.scitt.statement import SignedStatement
from scitt_oci.verify.trust import ReceiptGroup, TrustPolicy


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
    signed_at: int | None = None  # the iat (15/6) in the receipt's protected header, if any
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
    # When an x5chain was validated: the registration time a trusted receipt proves, else the verification time.
    chain_time: dt.datetime | None = None
    chain_time_source: str | None = None
    issuer_binding: str | None = None  # how iss was tied to the certificate: "did:x509" or "certificate rule"

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
        if self.chain_time is not None:
            out["statement"]["certificate_checked_at"] = {
                "time": self.chain_time.strftime("%Y-%m-%dT%H:%M:%SZ"),
                "source": self.chain_time_source,
            }
        if self.issuer_binding is not None:
            out["statement"]["issuer_binding"] = self.issuer_binding
        if self.event is not None:
            out["statement"]["event"] = {
                "kind": self.event.kind.value,
                "subject": str(self.event.subject),
                "recorded": str(self.event.recorded_digest),
                **dict(self.event.details),
            }
        return out


def _check_issuer(
    statement: SignedStatement, policy: TrustPolicy, result: VerificationResult, at: dt.datetime, source: str
) -> None:
    """Is the statement signed by a trusted issuer? An x5chain is validated at `at` (see `_chain_time`)."""
    if policy.issuers is None:
        try:
            match = statement_mod.verify(statement, trust_embedded=True, at=at)
        except UntrustedKeyError as exc:
            result.fail(
                Reason.UNTRUSTED_ISSUER,
                "the policy names no issuer keys, so only a certificate the statement carries can check its "
                f"signature: {exc}",
            )
            return
        except MalformedError as exc:
            result.fail(Reason.MALFORMED, f"the statement's issuer headers are malformed: {exc}")
            return
        except ScittOciError as exc:
            result.fail(Reason.BAD_STATEMENT_SIGNATURE, f"the issuer's signature does not verify: {exc}")
            return
        _note_chain(result, match, source)
        return
    untrusted: list[str] = []
    for issuer in policy.issuers:
        if issuer.iss is not None and statement.issuer != issuer.iss:
            untrusted.append(f"{issuer.name}: iss is {statement.issuer!r}, not {issuer.iss!r}")
            continue
        try:
            match = statement_mod.verify(statement, keys=issuer.keys, x509_roots=issuer.x509_roots, at=at)
            binding = None
            if match.method == "x5chain" and issuer.x509_roots:
                from scitt_oci.scitt import x509chain  # imported here: only statements with chains need it

                rule = issuer.certificate or x509chain.CertificateRule()
                binding = x509chain.check_binding(
                    statement.issuer, match.chain, x509chain.IssuerBinding(issuer.iss, rule)
                )
        except UntrustedKeyError as exc:
            untrusted.append(f"{issuer.name}: {exc}")
            continue
        except MalformedError as exc:
            result.fail(Reason.MALFORMED, f"the statement's issuer headers are malformed: {exc}")
            return
        except ScittOciError as exc:
            result.fail(
                Reason.BAD_STATEMENT_SIGNATURE, f"the signature of issuer {issuer.name!r} does not verify: {exc}"
            )
            return
        result.trusted_issuer = issuer.name
        result.issuer_binding = binding
        _note_chain(result, match, source)
        return
    result.fail(Reason.UNTRUSTED_ISSUER, "no trusted issuer signed this statement (" + "; ".join(untrusted) + ")")


def _note_chain(result: VerificationResult, match: statement_mod.IssuerKeyMatch, source: str) -> None:
    if match.validated_at is not None:
        result.chain_time, result.chain_time_source = match.validated_at, source


def _chain_time(result: VerificationResult, now: dt.datetime | None, required: int = 1) -> tuple[dt.datetime, str]:
    """The time an issuer's certificate chain must be valid at: the registration time trusted receipts prove.

    A verified receipt from a trusted service proves the statement was registered no later than the
    time that service signed in the receipt's protected CWT Claims (`iat`, 15/6). When the policy
    requires receipts from `required` distinct services, the time is the one that many services
    vouch for (the `required`-th earliest of each service's earliest time), so one service alone
    cannot move it back. vds 1 defines no other signed time: when fewer services prove one, the
    chain is checked at the verification time (`now`). The statement's own `iat` is never used.
    """
    earliest: dict[str, dt.datetime] = {}
    for r in result.receipts:
        if not r.valid or r.signed_at is None:
            continue
        try:
            when = dt.datetime.fromtimestamp(r.signed_at, dt.UTC)
        except (OverflowError, OSError, ValueError):
            continue  # an iat no date can hold proves no time
        service = r.service or "?"
        if service not in earliest or when < earliest[service]:
            earliest[service] = when
    need = max(1, required)
    if len(earliest) >= need:
        ranked = sorted(earliest.items(), key=lambda item: item[1])[:need]
        return ranked[-1][1], f"receipt iat ({', '.join(name for name, _ in ranked)})"
    return (now or dt.datetime.now(dt.UTC)), "verification time"


def _check_receipts(
    statement: SignedStatement,
    receipts: Sequence[bytes],
    policy: TrustPolicy,
    result: VerificationResult,
    required: int,
    groups: Sequence[ReceiptGroup] = (),
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
                verified.claims.iat if verified.claims else None,
                verified.size_signed if verified.vds == 1 else None,
            )
        )
        if service not in result.services:
            result.services.append(service)
    if not receipts:
        result.fail(Reason.NO_RECEIPTS, "the statement carries no receipts and none were supplied")
        return
    unmet = [g for g in groups if len(set(g.services) & set(result.services)) < g.at_least]
    if len(result.services) >= required and not unmet:
        return
    for r in result.receipts:
        if r.finding is not None:
            result.fail(r.finding.reason, f"receipt {r.index}: {r.finding.message}")
    if not (result.services or all(r.finding is None for r in result.receipts)):
        return
    if len(result.services) < required:
        result.fail(
            Reason.TOO_FEW_RECEIPTS,
            f"receipts from {len(result.services)} trusted service(s) verify; the policy requires {required}",
        )
    for g in unmet:
        have = ", ".join(result.services) or "none"
        result.fail(Reason.TOO_FEW_RECEIPTS, f"the policy requires receipts from {g.describe()}; verified: {have}")


def verify_transparent_statement(
    data: bytes,
    policy: TrustPolicy,
    *,
    detached_receipts: Sequence[bytes] = (),
    digest: Digest | str | None = None,
    required_receipts: int | None = None,
    now: dt.datetime | None = None,
    receipt_groups: Sequence[ReceiptGroup] | None = None,
) -> VerificationResult:
    """Verify a Transparent Statement (or a Signed Statement with `detached_receipts`).

    With `digest`, the statement must also be a scitt-oci profile statement about that image.
    Receipts are checked first: the registration time they prove is when an issuer's X.509 chain
    must have been valid (`_chain_time`); `now` (default: the clock) is used only when none proves one.
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
    receipts = VerificationResult()
    _check_receipts(
        statement,
        list(parsed.receipts) + list(detached_receipts),
        policy,
        receipts,
        required_receipts or policy.required_receipts,
        policy.requirements.receipt_groups if receipt_groups is None else receipt_groups,
    )
    result.receipts, result.services = receipts.receipts, receipts.services
    at, source = _chain_time(result, now, required_receipts or policy.required_receipts)
    _check_issuer(statement, policy, result, at, source)
    result.findings.extend(receipts.findings)
    return result
