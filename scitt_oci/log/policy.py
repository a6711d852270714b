"""The registration policy: what the log checks before it stores anything (RFC 9943 5.1.1.1).

Rejections carry SCRAPI's problem titles (`RejectionKind`); the HTTP face chooses their statuses. The statement that passes comes back with its
unprotected header emptied, ready to be the log entry.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from cryptography import x509

from scitt_oci.cose import algorithms
from scitt_oci.cose.keys import CoseKey
from scitt_oci.errors import MalformedError, ScittOciError, SignatureError, UnsupportedError, UntrustedKeyError
from scitt_oci.errors import Rejection as Rejection  # defined there since #12; kept importable here
from scitt_oci.scitt import statement as statement_mod
from scitt_oci.scitt import x509chain
from scitt_oci.scitt.statement import SignedStatement
from scitt_oci.scitt.x509chain import IssuerBinding


class RejectionKind(StrEnum):
    """Why a registration was refused: SCRAPI's problem titles. The HTTP face picks each one's status."""

    MALFORMED = "Malformed request"
    BAD_ALGORITHM = "Bad Signature Algorithm"
    PAYLOAD_MISSING = "Payload Missing"
    REJECTED = "Rejected"
    TOO_LARGE = "Payload Too Large"


MALFORMED = RejectionKind.MALFORMED
BAD_ALGORITHM = RejectionKind.BAD_ALGORITHM
PAYLOAD_MISSING = RejectionKind.PAYLOAD_MISSING
REJECTED = RejectionKind.REJECTED
TOO_LARGE = RejectionKind.TOO_LARGE

DEFAULT_ALGORITHMS = ("ES256", "ES384", "ES512", "EdDSA", "PS256", "PS384", "PS512")


@dataclass(frozen=True)
class RegistrationPolicy:
    issuer_keys: tuple[CoseKey, ...] = ()
    x509_roots: tuple[x509.Certificate, ...] = ()
    open_registration: bool = False  # accept any statement whose signature verifies with the key it carries
    algorithms: frozenset[int] = field(
        default_factory=lambda: frozenset(algorithms.BY_NAME[a].cose_id for a in DEFAULT_ALGORITHMS)
    )
    max_statement_bytes: int = 64 * 1024
    issuers: tuple[str, ...] | None = None  # allowed iss values (globs)
    subjects: tuple[str, ...] | None = None  # allowed sub values (globs)
    # How an iss is bound to a certificate under x509_roots; a did:x509 iss binds itself.
    x509_issuers: tuple[IssuerBinding, ...] = ()
    _subject_res: tuple[re.Pattern[str], ...] = field(default=(), compare=False, repr=False)

    @classmethod
    def build(
        cls,
        *,
        issuer_keys: Sequence[CoseKey] = (),
        x509_roots: Sequence[x509.Certificate] = (),
        open_registration: bool = False,
        algorithm_names: Sequence[str] = DEFAULT_ALGORITHMS,
        max_statement_bytes: int = 64 * 1024,
        issuers: Sequence[str] | None = None,
        subjects: Sequence[str] | None = None,
        x509_issuers: Sequence[IssuerBinding] = (),
    ) -> RegistrationPolicy:
        return cls(
            tuple(issuer_keys),
            tuple(x509_roots),
            open_registration,
            frozenset(algorithms.by_name(a).cose_id for a in algorithm_names),
            max_statement_bytes,
            tuple(issuers) if issuers is not None else None,
            tuple(subjects) if subjects is not None else None,
            tuple(x509_issuers),
            tuple(re.compile(fnmatch.translate(s)) for s in subjects or ()),
        )

    def check(self, data: bytes, *, now: dt.datetime | None = None) -> SignedStatement:
        """The statement, ready for the log, or `Rejection` saying why not.

        An x5chain is validated at `now` (the service's clock), never at the `iat` the issuer wrote.
        """
        signed = self._parse(data)
        try:
            signed.check_required_headers()
        except ScittOciError as exc:
            raise Rejection(REJECTED, str(exc)) from None
        assert signed.claims is not None and signed.claims.iss and signed.claims.sub
        if self.issuers is not None and not any(fnmatch.fnmatchcase(signed.claims.iss, p) for p in self.issuers):
            raise Rejection(REJECTED, f"issuer {signed.claims.iss!r} is not allowed to register here")
        if self.subjects is not None and not any(r.match(signed.claims.sub) for r in self._subject_res):
            raise Rejection(REJECTED, f"subject {signed.claims.sub!r} matches none of the allowed subject patterns")
        self._verify(signed, now)  # None: statement.verify reads the clock, and only when a chain needs it
        return signed.stripped()

    def _parse(self, data: bytes) -> SignedStatement:
        """The Signed Statement in `data`, within this log's size, with an attached payload and an accepted alg."""
        if len(data) > self.max_statement_bytes:
            raise Rejection(
                TOO_LARGE, f"the statement is {len(data)} bytes; this log accepts at most {self.max_statement_bytes}"
            )
        try:
            signed = statement_mod.parse(data)
        except UnsupportedError as exc:
            raise Rejection(REJECTED, str(exc)) from None
        except ScittOciError as exc:
            raise Rejection(MALFORMED, f"the body is not a COSE_Sign1 Signed Statement: {exc}") from None
        message = signed.message
        if message.payload is None:
            raise Rejection(
                PAYLOAD_MISSING, "the statement's payload is detached; this log registers attached payloads only"
            )
        try:
            alg = message.alg
        except ScittOciError:
            raise Rejection(BAD_ALGORITHM, f"alg {message.protected.get(1)!r} is missing or not supported") from None
        if alg.cose_id not in self.algorithms:
            allowed = ", ".join(a.name for a in algorithms.ALGORITHMS.values() if a.cose_id in self.algorithms)
            raise Rejection(BAD_ALGORITHM, f"{alg.name} is not accepted here (accepted: {allowed})")
        return signed

    def _verify(self, signed: SignedStatement, now: dt.datetime | None) -> None:
        """The issuer's signature, under a key or root this log trusts (or, open, the key it carries)."""
        assert signed.claims is not None and signed.claims.iss
        try:
            match = statement_mod.verify(
                signed,
                keys=self.issuer_keys,
                x509_roots=self.x509_roots,
                trust_embedded=self.open_registration,
                at=now,
            )
            if match.method == "x5chain" and self.x509_roots:
                self._check_binding(signed.claims.iss, match.chain)
        except UntrustedKeyError as exc:
            raise Rejection(REJECTED, f"the issuer is not trusted by this log: {exc}") from None
        except SignatureError as exc:
            raise Rejection(REJECTED, f"the issuer's signature does not verify: {exc}") from None
        except MalformedError as exc:
            raise Rejection(MALFORMED, str(exc)) from None
        except ScittOciError as exc:
            raise Rejection(REJECTED, str(exc)) from None

    def _check_binding(self, iss: str, chain: Sequence[x509.Certificate]) -> None:
        """A chain under our roots may claim only an iss bound to it: a did:x509 it proves, or an entry of x509_issuers."""
        if iss.startswith("did:x509:"):
            return  # statement.verify resolved it against the validated chain
        reasons = []
        for binding in (b for b in self.x509_issuers if b.iss == iss):
            try:
                x509chain.check_binding(iss, chain, binding)
                return
            except UntrustedKeyError as exc:
                reasons.append(str(exc))
        if reasons:
            raise UntrustedKeyError("; ".join(reasons))
        raise UntrustedKeyError(
            f"iss {iss!r} is not bound to certificate {chain[0].subject.rfc4514_string()!r}: use a did:x509 iss "
            "the certificate proves, or name this iss with certificate rules in registration.x509_issuers"
        )
