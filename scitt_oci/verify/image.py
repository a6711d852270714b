"""Is an image on record? Verify what is attached to it against the trust policy.

The decision is pure (`decide`): the statements attached to an image digest, a policy, a clock.
Fetching them is `oci.attached` (one reading for the admission webhook, `verify`, `history` and promotion);
`attached_statements` is re-exported here for the callers that verify what they fetch.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from scitt_oci.oci.attached import MAX_STATEMENTS, ReferrerSource, Statements, attached_statements, truncation_note
from scitt_oci.oci.reference import Reference
from scitt_oci.scitt import profile
from scitt_oci.scitt.reasons import Reason
from scitt_oci.signatures import x509path
from scitt_oci.verify.trust import PolicyMode, Requirements, SignatureRequirement, TrustPolicy
from scitt_oci.verify.verifier import Finding, VerificationResult, verify_transparent_statement

__all__ = ["MAX_STATEMENTS", "ImageVerdict", "ReferrerSource", "attached_statements", "decide"]


@dataclass
class ImageVerdict:
    image: str
    allowed: bool  # the decision after the mode: audit always allows
    valid: bool  # what the policy says, whatever the mode
    mode: str
    rule: str | None
    reasons: list[Finding] = field(default_factory=list)
    statements: list[VerificationResult] = field(default_factory=list)

    @property
    def warnings(self) -> list[str]:
        return [f"{self.image}: {f.reason.value}: {f.message}" for f in self.reasons] if not self.valid else []

    def summary(self) -> str:
        if self.valid:
            kinds = sorted({s.event.kind.value for s in self.statements if s.valid and s.event})
            return f"{self.image}: on record ({', '.join(kinds)})"
        return f"{self.image}: " + "; ".join(f"{f.reason.value}: {f.message}" for f in self.reasons)

    def to_json(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "decision": "ADMIT" if self.allowed else "REJECT",
            "valid": self.valid,
            "mode": self.mode,
            "rule": self.rule,
            "reasons": [f.to_json() for f in self.reasons],
            "statements": [s.to_json() for s in self.statements],
        }


def _signature_matches(event: profile.OciEvent, want: SignatureRequirement) -> bool:
    """Only a signature its issuer verified counts; a v1 signer, or an unverified one, is a claim."""
    if event.kind is not profile.Kind.SIGNATURE or not event.verified:
        return False
    if want.format is not None and event.detail("format") != want.format:
        return False
    if want.anchor is not None and event.detail("anchor") != want.anchor:
        return False
    if want.issuer is not None and not fnmatch.fnmatchcase(event.detail("oidc-issuer") or "", want.issuer):
        return False
    if want.signer is None:
        return True
    signer = event.detail("signer") or ""
    if event.detail("format") == "notation" or want.subject is not None:  # a distinguished name: compared parsed
        return want.subject is not None and x509path.signer_matches(want.subject, signer)
    return fnmatch.fnmatchcase(signer, want.signer)


def _unverified_note(signatures: list[profile.OciEvent], want: SignatureRequirement) -> str:
    """Why recorded signatures of the wanted format did not count, for the REJECT message."""
    notes = []
    for e in signatures:
        if e.verified or (want.format is not None and e.detail("format") != want.format):
            continue
        if e.version < 2:
            notes.append(f"a v1 {e.detail('format')} record whose signer ({e.detail('signer')}) nobody verified")
        else:
            notes.append(f"a {e.detail('format')} signature that did not verify: {e.detail('reason')}")
    return f" (recorded but not counted: {'; '.join(notes[:3])})" if notes else ""


def decide(ref: Reference, blobs: Sequence[bytes], policy: TrustPolicy, *, now: float | None = None) -> ImageVerdict:
    """The verdict for `ref` (with digest) given the statements attached to it. A reading that stopped at
    a bound (`Statements.truncated`, or more than MAX_STATEMENTS given) is never valid: what is past the
    bound (a delete record, say) could change the verdict, so it is TOO_MANY_REFERRERS."""
    requirements, mode, rule = policy.for_repository(f"{ref.registry}/{ref.repository}")
    verdict = ImageVerdict(str(ref), False, False, mode, rule)
    assert ref.digest is not None
    at = dt.datetime.fromtimestamp(now, dt.UTC) if now is not None else None
    for blob in blobs[:MAX_STATEMENTS]:
        verdict.statements.append(
            verify_transparent_statement(
                blob,
                policy,
                digest=ref.digest,
                required_receipts=requirements.receipts,
                receipt_groups=requirements.receipt_groups,
                now=at,
            )
        )
    valid = [s for s in verdict.statements if s.valid and s.event is not None]
    _check(verdict, valid, requirements, now if now is not None else time.time())
    listed = blobs.listed if isinstance(blobs, Statements) else len(blobs)
    if len(blobs) > MAX_STATEMENTS or (isinstance(blobs, Statements) and blobs.truncated):
        verdict.reasons.insert(0, Finding(Reason.TOO_MANY_REFERRERS, truncation_note(listed)))
    verdict.valid = not verdict.reasons
    verdict.allowed = verdict.valid or mode == PolicyMode.AUDIT
    return verdict


def _deleted(valid: list[VerificationResult]) -> bool:
    """On record as deleted: a delete statement no later than which any push was recorded (issuer iat;
    a tie counts as deleted). A push recorded after the delete is the image pushed again."""

    def latest(kind: profile.Kind) -> float | None:
        times = [s.iat if s.iat is not None else 0 for s in valid if s.event is not None and s.event.kind is kind]
        return max(times) if times else None

    deleted, pushed = latest(profile.Kind.DELETE), latest(profile.Kind.PUSH)
    return deleted is not None and (pushed is None or pushed <= deleted)


def _check(verdict: ImageVerdict, valid: list[VerificationResult], req: Requirements, now: float) -> None:
    if not verdict.statements:
        verdict.reasons.append(
            Finding(Reason.NO_STATEMENTS, "nothing is on record for this image: no statements are attached to it")
        )
        return
    if not valid:
        verdict.reasons.extend(_why_none_counted(verdict.statements))
        return
    events = [s.event for s in valid if s.event is not None]
    verdict.reasons.extend(_missing_kinds(events, req))
    if _deleted(valid):
        verdict.reasons.append(
            Finding(Reason.MISSING_STATEMENT, "the image is on record as deleted (no push recorded after the delete)")
        )
    verdict.reasons.extend(_too_old(valid, req, now))
    verdict.reasons.extend(_missing_signatures(events, req))


def _why_none_counted(statements: list[VerificationResult]) -> list[Finding]:
    """Why the statements that are there did not count: their own first reasons, each reason once."""
    seen: list[Finding] = []
    for s in statements:
        for f in s.findings[:1]:
            if f.reason not in [x.reason for x in seen]:
                seen.append(f)
    return seen


def _missing_kinds(events: list[profile.OciEvent], req: Requirements) -> list[Finding]:
    """The statement kinds the policy requires that are not on record. A signature or attestation counts
    as a kind on record only when its issuer verified it."""
    kinds = {e.kind.value for e in events if e.kind not in profile.SIGNED_KINDS or e.verified}
    out = []
    for kind in req.statements:
        if kind not in kinds:
            unverified = sum(1 for e in events if e.kind.value == kind)
            note = f" ({unverified} unverified do not count)" if unverified else ""
            out.append(
                Finding(Reason.MISSING_STATEMENT, f"no valid {kind} statement is on record for this image{note}")
            )
    return out


def _too_old(valid: list[VerificationResult], req: Requirements, now: float) -> list[Finding]:
    """The newest push statement, older than the policy's max_age."""
    if req.max_age is None:
        return []
    pushed = [s.iat for s in valid if s.event and s.event.kind is profile.Kind.PUSH and s.iat is not None]
    if not pushed or now - max(pushed) <= req.max_age:
        return []
    age_days = (now - max(pushed)) / 86400
    return [
        Finding(
            Reason.EXPIRED,
            f"the push statement is {age_days:.1f} days old; the policy allows {req.max_age / 86400:.1f}",
        )
    ]


def _missing_signatures(events: list[profile.OciEvent], req: Requirements) -> list[Finding]:
    """The policy's signature requirements no verified signature on record meets."""
    signatures = [e for e in events if e.kind is profile.Kind.SIGNATURE]
    out = []
    for want in req.signatures:
        if not any(_signature_matches(e, want) for e in signatures):
            note = _unverified_note(signatures, want)
            out.append(
                Finding(Reason.MISSING_STATEMENT, f"no verified {want.describe()} signature of this image{note}")
            )
    return out
