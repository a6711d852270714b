"""The scitt-oci statement profile, version 2 (docs/profile.md): Signed Statements about OCI events.

Version 2 records what the issuer verified about a signature (`verified`, the identity as
verified, the trust anchor, or the reason it did not verify). Version 1 statements still read;
their signature `signer` was the pusher's claim, so a v1 signature event is never `verified`.

Every statement is a hash envelope over the object it records. `sub` names the image the
statement is about as `oci://registry/repository@digest`; the protected header "scitt-oci" says
which event it records. A verifier holding only an image digest decides offline whether a
statement is about it (`check_about`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from scitt_oci.cose import headers
from scitt_oci.cose.hash_envelope import HASHES
from scitt_oci.cose.keys import CoseKey
from scitt_oci.errors import MalformedError, ScittOciError
from scitt_oci.oci.reference import DIGEST_HEX_LENGTHS, Digest, Reference
from scitt_oci.scitt import statement as statement_mod
from scitt_oci.scitt.reasons import Reason, VerificationFailure
from scitt_oci.scitt.statement import SignedStatement
from scitt_oci.signatures.model import Format

PROFILE_LABEL = "scitt-oci"
PROFILE_VERSION = 2
READABLE_VERSIONS = (1, 2)


class Kind(StrEnum):
    PUSH = "push"  # an image manifest or index was pushed; the payload is its digest
    SIGNATURE = "signature"  # a signature of the image was pushed; the payload is the signature manifest's digest
    DELETE = "delete"  # the image manifest was deleted; the payload is its digest
    DEPLOY = "deploy"  # the image was admitted to run in a cluster; the payload is its digest
    ATTESTATION = (
        "attestation"  # an attestation (in-toto statement) about the image; the payload is its manifest's digest
    )
    IMPORT = "import"  # the image was promoted here after its upstream record verified; the payload is its digest


SIGNED_KINDS = (Kind.SIGNATURE, Kind.ATTESTATION)
# What the issuer says it verified about a signature or attestation (v2).
_VERIFICATION = (
    "format",
    "verified",
    "signer",
    "oidc-issuer",
    "key-id",
    "chain",
    "anchor",
    "reason",
    "predicate-type",
    "timestamp",
)
# Members that name who signed: present only when the issuer verified the signature.
IDENTITY_FIELDS = ("signer", "oidc-issuer", "key-id", "chain", "anchor")
# Kind-specific members of the profile header; all text but `verified` (a bool).
_FIELDS: dict[Kind, tuple[str, ...]] = {
    Kind.PUSH: ("tag",),
    Kind.SIGNATURE: _VERIFICATION,
    Kind.ATTESTATION: _VERIFICATION,
    Kind.DELETE: ("tag",),
    Kind.DEPLOY: ("cluster", "namespace", "workload"),
    Kind.IMPORT: ("source", "policy"),
}
# An import names the upstream statements it verified: a list, not text (`OciEvent.upstream`).
UPSTREAM = "statements"
MAX_UPSTREAM = 256
# Version 1: no attestations, and a signature's signer was copied from what the pusher wrote.
_FIELDS_V1: dict[Kind, tuple[str, ...]] = {
    **{k: v for k, v in _FIELDS.items() if k not in (Kind.ATTESTATION, Kind.IMPORT)},
    Kind.SIGNATURE: ("format", "signer"),
}
SIGNATURE_FORMATS = tuple(Format)
Detail = str | bool


@dataclass(frozen=True)
class OciEvent:
    """What one statement records."""

    kind: Kind
    subject: Reference  # the image, with digest
    recorded_digest: Digest  # what the payload hashes: the image itself, or the signature manifest
    media_type: str | None = None  # media type of the recorded object
    details: tuple[tuple[str, Detail], ...] = ()
    version: int = PROFILE_VERSION
    upstream: tuple[Digest, ...] = ()  # import: the SHA-256 of each upstream statement's log entry it verified

    @property
    def recorded(self) -> Reference:
        return self.subject.with_digest(self.recorded_digest)

    def detail(self, name: str) -> str | None:
        value = dict(self.details).get(name)
        return value if isinstance(value, str) else None

    @property
    def verified(self) -> bool:
        """The issuer verified this signature or attestation (v2 `verified: true`); v1 signers are claims."""
        return self.kind in SIGNED_KINDS and self.version >= 2 and dict(self.details).get("verified") is True


def _validate_details(
    kind: Kind, details: dict[str, Any], version: int = PROFILE_VERSION
) -> tuple[tuple[str, Detail], ...]:
    allowed = (_FIELDS_V1 if version == 1 else _FIELDS)[kind]
    for name, value in details.items():
        _check_detail(kind, allowed, name, value)
    if kind in SIGNED_KINDS:
        _check_signed_details(kind, details, version)
    if kind is Kind.IMPORT:
        if "source" not in details or "policy" not in details:
            raise MalformedError("profile: an import statement names its source and policy")
        Digest.parse(details["policy"])
    return tuple(sorted(details.items()))


def _check_detail(kind: Kind, allowed: tuple[str, ...], name: str, value: object) -> None:
    """One detail: a field `kind` statements take, holding a boolean (`verified`) or short text."""
    if name not in allowed:
        raise MalformedError(f"profile: {kind.value} statements take {', '.join(allowed)}, not {name!r}")
    if name == "verified":
        if not isinstance(value, bool):
            raise MalformedError("profile: 'verified' must be true or false")
    elif not isinstance(value, str) or not value or len(value) > 1024:
        raise MalformedError(f"profile: {name!r} must be a non-empty text string of at most 1024 characters")


def _check_signed_details(kind: Kind, details: dict[str, Any], version: int) -> None:
    """A signature's or attestation's format, and (v2) whether it was verified, with who signed or why not."""
    if details.get("format") not in SIGNATURE_FORMATS:
        raise MalformedError(f"profile: {kind.value} format must be one of {', '.join(SIGNATURE_FORMATS)}")
    if version < 2:
        return
    if "verified" not in details:
        raise MalformedError(f"profile: a v{version} {kind.value} statement must say whether it was verified")
    if details["verified"] is True and not {"signer", "anchor"} <= details.keys():
        raise MalformedError("profile: a verified signature names its signer and the trust anchor that verified it")
    claimed = sorted(set(IDENTITY_FIELDS) & details.keys())
    if details["verified"] is False and claimed:
        raise MalformedError(f"profile: an unverified signature names no signer ({', '.join(claimed)} given)")
    if details["verified"] is False and "reason" not in details:
        raise MalformedError("profile: an unverified signature says why (reason)")


def _validate_upstream(kind: Kind, upstream: object) -> tuple[Digest, ...]:
    if kind is not Kind.IMPORT:
        if upstream is not None:
            raise MalformedError(f"profile: {kind.value} statements take no {UPSTREAM!r} list")
        return ()
    if not isinstance(upstream, list) or len(upstream) > MAX_UPSTREAM:
        raise MalformedError(f"profile: an import's {UPSTREAM!r} must be a list of at most {MAX_UPSTREAM} digests")
    out = []
    for item in upstream:
        if not isinstance(item, str):
            raise MalformedError(f"profile: each member of {UPSTREAM!r} must be a digest as text")
        out.append(Digest.parse(item))
    return tuple(sorted(set(out), key=str))


def make_event(
    kind: Kind,
    subject: Reference,
    *,
    recorded_digest: Digest | None = None,
    media_type: str | None = None,
    **details: Detail,
) -> OciEvent:
    if subject.digest is None:
        raise MalformedError(f"profile: the subject {subject} must carry a digest")
    if kind is Kind.IMPORT:
        raise MalformedError("profile: an import statement is made with make_import")
    recorded = recorded_digest or subject.digest
    if kind not in SIGNED_KINDS and recorded != subject.digest:
        raise MalformedError(f"profile: a {kind.value} statement records the image itself")
    return OciEvent(kind, subject, recorded, media_type, _validate_details(kind, details))


def make_import(
    subject: Reference, *, source: str, policy: str, upstream: tuple[Digest, ...], media_type: str | None = None
) -> OciEvent:
    """The event of a promotion: `subject` (with digest) arrived from `source` after the upstream statements
    `upstream` (digests of their log entries) verified under the policy whose digest is `policy`."""
    if subject.digest is None:
        raise MalformedError(f"profile: the subject {subject} must carry a digest")
    details = _validate_details(Kind.IMPORT, {"source": source, "policy": policy})
    checked = _validate_upstream(Kind.IMPORT, [str(d) for d in upstream])
    return OciEvent(Kind.IMPORT, subject, subject.digest, media_type, details, upstream=checked)


def build(key: CoseKey, issuer: str, event: OciEvent, *, iat: int | None = None) -> SignedStatement:
    """Sign the statement recording `event`."""
    header: dict[str, Any] = {"v": PROFILE_VERSION, "kind": event.kind.value, **dict(event.details)}
    if event.kind is Kind.IMPORT:
        header[UPSTREAM] = [str(d) for d in event.upstream]
    return statement_mod.hash_envelope_statement(
        key,
        issuer=issuer,
        subject=event.subject.uri(),
        digest=event.recorded_digest.raw,
        hash_alg=event.recorded_digest.cose_hash_alg,
        media_type=event.media_type,
        location=event.recorded.uri(),
        iat=iat,
        extra_protected={PROFILE_LABEL: header},
    )


def _malformed(message: str) -> VerificationFailure:
    return VerificationFailure(Reason.MALFORMED, f"not a scitt-oci profile statement: {message}")


def read_event(statement: SignedStatement) -> OciEvent:
    """The event a profile statement records, checking every profile rule; `VerificationFailure` (MALFORMED) if broken."""
    protected = statement.message.protected
    header = protected.get(PROFILE_LABEL)
    if not isinstance(header, dict):
        raise _malformed(f'protected header has no "{PROFILE_LABEL}" map')
    version = header.get("v")
    if isinstance(version, bool) or version not in READABLE_VERSIONS:
        raise _malformed(f"profile version {version!r} is not one of {', '.join(map(str, READABLE_VERSIONS))}")
    kind_text = header.get("kind")
    try:
        kind = Kind(kind_text if isinstance(kind_text, str) else "")
        if version == 1 and kind in (Kind.ATTESTATION, Kind.IMPORT):
            raise ValueError
    except ValueError:
        raise _malformed(
            f"kind {header.get('kind')!r} is not one of {', '.join(_FIELDS_V1 if version == 1 else _FIELDS)}"
        ) from None
    if statement.subject is None or statement.envelope is None:
        raise _malformed("it needs sub (15/2) and a hash envelope (258)")
    try:
        subject = Reference.parse(statement.subject)
        details = _validate_details(
            kind, {k: v for k, v in header.items() if k not in ("v", "kind", UPSTREAM)}, version
        )
        upstream = _validate_upstream(kind, header.get(UPSTREAM))
    except ScittOciError as exc:
        raise _malformed(str(exc)) from None
    if subject.digest is None or not statement.subject.startswith("oci://"):
        raise _malformed(f"sub {statement.subject!r} must be oci://registry/repository@digest")
    env = statement.envelope
    algorithm = HASHES.get(env.hash_alg, ("", 0))[0]
    if algorithm not in DIGEST_HEX_LENGTHS:
        raise _malformed(f"payload-hash-alg {env.hash_alg} is not an OCI digest algorithm")
    recorded = Digest.from_bytes(algorithm, env.digest)
    location = protected.get(headers.PAYLOAD_LOCATION)
    if location != subject.with_digest(recorded).uri():
        raise _malformed(f"payload-location {location!r} does not name the recorded object {recorded}")
    if kind not in SIGNED_KINDS and recorded != subject.digest:
        raise _malformed(f"a {kind.value} statement's payload must be the subject digest")
    media_type = env.preimage_content_type if isinstance(env.preimage_content_type, str) else None
    return OciEvent(kind, subject, recorded, media_type, details, version, upstream)


def check_about(statement: SignedStatement, digest: Digest | str) -> OciEvent:
    """The event, if `statement` is about the image `digest`; else `VerificationFailure` SUBJECT_MISMATCH."""
    wanted = Digest.parse(digest) if isinstance(digest, str) else digest
    event = read_event(statement)
    if event.subject.digest != wanted:
        raise VerificationFailure(
            Reason.SUBJECT_MISMATCH,
            f"the statement is about {event.subject.digest}, not {wanted}",
        )
    return event
