"""SCITT Signed Statements (RFC 9943 section 6): build, sign, parse, verify, and the log entry form."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from scitt_oci.cose import hash_envelope, headers, sign1
from scitt_oci.cose.cbor import DEFAULT_LIMITS, Limits
from scitt_oci.cose.cwt import CwtClaims, claims_of
from scitt_oci.cose.hash_envelope import HashEnvelope
from scitt_oci.cose.keys import KID_FORMS, CoseKey, kid_text
from scitt_oci.cose.sign1 import Sign1
from scitt_oci.errors import MalformedError, SignatureError, UnsupportedError, UntrustedKeyError

if TYPE_CHECKING:
    from cryptography import x509


@dataclass(frozen=True)
class SignedStatement:
    """A parsed Signed Statement. `message` holds the exact bytes of what was signed."""

    message: Sign1
    claims: CwtClaims | None
    envelope: HashEnvelope | None

    @property
    def issuer(self) -> str | None:
        return self.claims.iss if self.claims else None

    @property
    def subject(self) -> str | None:
        return self.claims.sub if self.claims else None

    def entry(self) -> bytes:
        """The log entry: the tagged statement with an empty unprotected header, other items byte-identical."""
        message = self.message
        if not message.unprotected and message._encoded is None:  # already that form (`stripped`): no copy
            return message.encode(tagged=True)
        return message.with_unprotected({}).encode(tagged=True)

    def stripped(self) -> SignedStatement:
        """This statement with its unprotected header emptied (what a log registers)."""
        return SignedStatement(self.message.with_unprotected({}), self.claims, self.envelope)

    def encode(self) -> bytes:
        return self.message.encode(tagged=True)

    def check_required_headers(self) -> None:
        """RFC 9943's rules for a registrable statement: alg; CWT Claims with iss and sub; kid unless x5t/x5chain."""
        protected = self.message.protected
        missing = []
        if headers.ALG not in protected:
            missing.append("alg (1)")
        if self.claims is None:
            missing.append("CWT Claims (15)")
        else:
            if not self.claims.iss:
                missing.append("iss (15/1)")
            if not self.claims.sub:
                missing.append("sub (15/2)")
        if headers.KID not in protected and headers.X5T not in protected and headers.X5CHAIN not in protected:
            missing.append("kid (4), x5t (34) or x5chain (33)")
        if missing:
            raise MalformedError(f"Signed Statement protected header lacks {', '.join(missing)}")


def parse(data: bytes, limits: Limits = DEFAULT_LIMITS, *, unknown_critical: bool = False) -> SignedStatement:
    """Parse a Signed Statement (or Transparent Statement) from bytes, tagged or untagged.

    `unknown_critical` lets a statement with critical headers we do not understand through, for
    display only (`statement inspect`); verification refuses it."""
    message = sign1.decode(data, limits, unknown_critical=unknown_critical)
    return from_message(message)


def from_message(message: Sign1) -> SignedStatement:
    claims = claims_of(message.protected)
    if headers.CWT_CLAIMS in message.unprotected:
        raise MalformedError("CWT Claims (15) must be in the protected header, not the unprotected one")
    envelope = hash_envelope.parse(message.protected, message.unprotected, message.payload)
    message.kid  # noqa: B018 - a kid that is not a bstr is malformed (RFC 9052), never "absent"
    return SignedStatement(message, claims, envelope)


def build(
    key: CoseKey,
    *,
    issuer: str,
    subject: str,
    payload: bytes,
    content_type: str | int | None = None,
    envelope: HashEnvelope | None = None,
    iat: int | None = None,
    x5chain: Sequence[bytes] | None = None,
    extra_protected: dict[Any, Any] | None = None,
    detached: bool = False,
) -> SignedStatement:
    """Sign a new Signed Statement with `key`. With `envelope`, `payload` must be its digest."""
    claims = CwtClaims(iss=issuer, sub=subject, iat=iat)
    protected: dict[Any, Any] = {headers.KID: key.kid}
    if x5chain:
        protected[headers.X5CHAIN] = list(x5chain) if len(x5chain) > 1 else x5chain[0]
    if envelope is not None:
        if content_type is not None:
            raise MalformedError("a hash envelope carries the artifact's media type in 259, not content type (3)")
        if envelope.digest != payload:
            raise MalformedError("the hash envelope's payload must be the artifact digest")
        protected.update(envelope.header())
    elif content_type is not None:
        protected[headers.CONTENT_TYPE] = content_type
    protected[headers.CWT_CLAIMS] = claims.to_map()
    if extra_protected:
        protected.update(extra_protected)
    message = sign1.sign(key, protected, None if detached else payload, detached_payload=payload if detached else None)
    return from_message(message)


def hash_envelope_statement(
    key: CoseKey,
    *,
    issuer: str,
    subject: str,
    digest: bytes,
    hash_alg: int = -16,
    media_type: str | int | None = None,
    location: str | None = None,
    iat: int | None = None,
    extra_protected: dict[Any, Any] | None = None,
) -> SignedStatement:
    """A hash-envelope statement about an artifact whose digest is already known (e.g. an OCI digest)."""
    env = HashEnvelope(hash_alg, digest, media_type, location)
    return build(
        key, issuer=issuer, subject=subject, payload=digest, envelope=env, iat=iat, extra_protected=extra_protected
    )


@dataclass(frozen=True)
class IssuerKeyMatch:
    """How a statement's signature was verified: which key, found how."""

    method: str  # "kid", "x5chain", or "key" (no kid: a trusted key that verifies)
    key: CoseKey
    chain: tuple[x509.Certificate, ...] = ()
    validated_at: dt.datetime | None = None  # when the chain was path-validated; None: it was not


def verify(
    statement: SignedStatement,
    *,
    keys: Sequence[CoseKey] = (),
    x509_roots: Sequence[x509.Certificate] = (),
    trust_embedded: bool = False,
    detached_payload: bytes | None = None,
    at: dt.datetime | None = None,
) -> IssuerKeyMatch:
    """Verify the issuer's signature.

    The key is the leaf of the x5chain the protected header vouches for (path-validated to
    `x509_roots` at time `at`, or trusted as given when `trust_embedded`), else the key in `keys` that
    the statement's `kid` names. `at` is the time the chain must be valid at: the registration time
    a trusted receipt proves, or now (the default). The `iat` the issuer wrote is never used: it is
    the issuer's own claim, and a backdated one would revive an expired certificate.

    An `iss` that is a did:x509 must resolve against the chain, whatever else is trusted.
    """
    message = statement.message
    unknown = sign1.unknown_critical(message.protected) if headers.CRIT in message.protected else None
    if unknown:  # parsed for display only (`unknown_critical`): never verified
        raise UnsupportedError(f"critical header labels {unknown} are not understood")
    kid = message.kid  # MalformedError when it is not a bstr: checked before anything is trusted
    unbound = ""
    if headers.X5CHAIN in message.protected or headers.X5CHAIN in message.unprotected:
        return_value = _verify_chain(statement, keys, x509_roots, trust_embedded, detached_payload, at)
        if return_value is not None:
            return return_value
        from scitt_oci.scitt import x509chain

        unbound = f"; {x509chain.UNPROTECTED_CHAIN_IGNORED}"
    if kid is None:
        # No kid and no chain (as in some third-party statements): any trusted key that verifies.
        for key in keys:
            try:
                message.verify(key, detached_payload)
            except SignatureError:
                continue
            return IssuerKeyMatch("key", key)
        if not keys:
            raise UntrustedKeyError(
                "statement names no kid (4) and carries no x5chain (33), and no issuer keys are trusted" + unbound
            )
        raise SignatureError(
            f"statement carries no kid and none of the {len(keys)} trusted issuer keys verifies it" + unbound
        )
    for key in keys:
        if key.answers_to(kid):
            message.verify(key, detached_payload)
            return IssuerKeyMatch("kid", key)
    known = ", ".join(k.kid.hex()[:16] for k in keys) or "none"
    raise UntrustedKeyError(
        f"statement kid {kid_text(kid)} is not among the trusted issuer keys (known: {known}; a kid may be "
        f"{KID_FORMS}){unbound}"
    )


def _verify_chain(
    statement: SignedStatement,
    keys: Sequence[CoseKey],
    x509_roots: Sequence[x509.Certificate],
    trust_embedded: bool,
    detached_payload: bytes | None,
    at: dt.datetime | None,
) -> IssuerKeyMatch | None:
    """Verify by the x5chain the protected header vouches for; None when there is none (only an unbound one)."""
    from scitt_oci.scitt import (  # imported here: X.509 is slow to import and most statements use kid
        did_x509,
        x509chain,
    )

    message = statement.message
    chain = x509chain.chain_of(message.protected, message.unprotected)
    if not chain:
        return None
    leaf = chain[0]
    x509chain.check_x5t(message.protected, leaf)
    public = leaf.public_key()
    if not isinstance(public, (ec.EllipticCurvePublicKey, ed25519.Ed25519PublicKey, rsa.RSAPublicKey)):
        raise SignatureError(f"x5chain leaf key type {type(public).__name__} is not supported")
    leaf_key = CoseKey.from_key(public, alg=message.alg if not isinstance(public, rsa.RSAPublicKey) else None)
    when = at if at is not None else dt.datetime.now(dt.UTC)
    iss = statement.issuer
    validated: list[x509.Certificate] = []
    if x509_roots:
        validated = x509chain.validate_path(chain, x509_roots, when)
    elif not trust_embedded and not any(k.public == public for k in keys):
        raise UntrustedKeyError(
            f"statement is signed by certificate {leaf.subject.rfc4514_string()!r}, "
            "but no X.509 roots are configured and its key is not trusted"
        )
    elif did_x509.is_did_x509(iss):
        # did:x509 resolution validates the chain with its last certificate as the trust anchor.
        if len(chain) < 2:
            raise UntrustedKeyError(f"iss {iss!r} is a did:x509, which needs a chain of at least two certificates")
        validated = x509chain.validate_path(chain, [chain[-1]], when)
    message.verify(leaf_key, detached_payload)
    if did_x509.is_did_x509(iss):
        assert iss is not None
        try:
            did_x509.resolve(iss, validated, supplied=chain)
        except MalformedError as exc:
            raise UntrustedKeyError(f"iss is not a well-formed did:x509: {exc}") from None
    return IssuerKeyMatch("x5chain", leaf_key, tuple(validated or chain), when if validated else None)
