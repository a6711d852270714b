"""Sigstore bundles (v0.1 to v0.3, as cosign v3 attaches them): verified offline against a
configured trusted root with the `sigstore` library, identity and OIDC issuer from the verified
certificate, digest bound to the subject.

A message-signature bundle must sign the subject digest itself. A DSSE bundle must carry an
in-toto statement whose subjects include the subject digest; its predicate type says whether it is
cosign's image signature (`https://sigstore.dev/cosign/sign/v1`) or an attestation.

The `sigstore` package is the optional extra `scitt-oci[sigstore]`; without it every bundle is
"not verified" and says so.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from scitt_oci.signatures import fulcio
from scitt_oci.signatures.model import ArtifactKind, Format, NotVerified, SignatureCheck, as_list, as_map
from scitt_oci.signatures.trust import SignatureTrust, SigstoreTrust
from scitt_oci.signatures.x509path import thumbprint

if TYPE_CHECKING:
    from cryptography import x509

IN_TOTO = "application/vnd.in-toto+json"
COSIGN_SIGN_PREDICATE = "https://sigstore.dev/cosign/sign/v1"
MAX_BUNDLE_BYTES = 1 << 20
_verifiers: dict[bytes, Any] = {}


class _IdentityPolicy:
    """A `sigstore` verification policy that admits the identities one trust entry expects."""

    def __init__(self, trust: SigstoreTrust) -> None:
        self.trust = trust

    def verify(self, cert: x509.Certificate) -> None:
        from sigstore.errors import VerificationError

        try:
            san, issuer = fulcio.san_of(cert), fulcio.oidc_issuer_of(cert)
        except NotVerified as exc:
            raise VerificationError(exc.reason) from None
        if not self.trust.identity_matches(san, issuer):
            wanted = "; ".join(f"{i.san} from {i.issuer}" for i in self.trust.identities) or "none configured"
            raise VerificationError(f"{san} from {issuer} is not an expected identity ({wanted})")


def _verifier(trust: SigstoreTrust) -> Any:
    found = _verifiers.get(trust.trusted_root)
    if found is None:
        from sigstore.models import TrustedRoot
        from sigstore.verify import Verifier
        from sigstore_models.trustroot.v1 import TrustedRoot as TrustedRootMessage

        # TrustedRoot has no public constructor from bytes; the format layer reads no files.
        found = Verifier(trusted_root=TrustedRoot(TrustedRootMessage.from_json(trust.trusted_root)))
        _verifiers[trust.trusted_root] = found
    return found


def _statement_kind(payload_type: str, payload: bytes, subject_digest: str) -> tuple[ArtifactKind, str | None]:
    if payload_type != IN_TOTO:
        raise NotVerified(f"the DSSE payload type {payload_type!r} is not {IN_TOTO}")
    try:
        statement = json.loads(payload)
    except ValueError:
        raise NotVerified("the DSSE payload is not JSON") from None
    if not isinstance(statement, dict):
        raise NotVerified("the in-toto statement must be a JSON object")
    alg, _, hex_digest = subject_digest.partition(":")
    if not any(as_map(as_map(s).get("digest")).get(alg) == hex_digest for s in as_list(statement.get("subject"))):
        raise NotVerified(f"the in-toto statement's subjects do not include {subject_digest}")
    predicate = statement.get("predicateType")
    predicate = predicate if isinstance(predicate, str) else None
    if predicate == COSIGN_SIGN_PREDICATE:
        return ArtifactKind.SIGNATURE, predicate
    return ArtifactKind.ATTESTATION, predicate


def _verify_with(bundle: Any, trust: SigstoreTrust, subject_digest: str) -> SignatureCheck:
    from sigstore.errors import Error
    from sigstore.hashes import Hashed
    from sigstore_models.common.v1 import HashAlgorithm

    verifier = _verifier(trust)
    policy = _IdentityPolicy(trust)
    kind, predicate = ArtifactKind.SIGNATURE, None
    try:
        if bundle._dsse_envelope is not None:
            payload_type, payload = verifier.verify_dsse(bundle, policy)
            kind, predicate = _statement_kind(payload_type, payload, subject_digest)
        else:
            alg, _, hex_digest = subject_digest.partition(":")
            if alg != "sha256":
                raise NotVerified(f"a message-signature bundle signs a SHA-256 digest; the subject is {alg}")
            verifier.verify_artifact(
                Hashed(algorithm=HashAlgorithm.SHA2_256, digest=bytes.fromhex(hex_digest)), bundle, policy
            )
    except Error as exc:
        raise NotVerified(str(exc) or type(exc).__name__) from None
    cert = bundle.signing_certificate
    return SignatureCheck(
        Format.COSIGN_BUNDLE,
        True,
        kind=kind,
        signer=fulcio.san_of(cert),
        oidc_issuer=fulcio.oidc_issuer_of(cert),
        chain=(thumbprint(cert),),
        anchor=trust.name,
        predicate_type=predicate,
        timestamp="established by the bundle's transparency-log entry or signed timestamps",
    )


def verify(data: bytes, subject_digest: str, trust: SignatureTrust) -> SignatureCheck:
    """Verify a Sigstore bundle over `subject_digest` against the Sigstore trusted roots in `trust`."""
    try:
        if len(data) > MAX_BUNDLE_BYTES:
            raise NotVerified(f"the bundle is {len(data)} bytes; at most {MAX_BUNDLE_BYTES} are accepted")
        if not trust.sigstore:
            raise NotVerified("no Sigstore trusted root is configured")
        try:
            from sigstore.errors import Error
            from sigstore.models import Bundle
        except ImportError:
            raise NotVerified(
                "Sigstore bundles need the sigstore package (pip install 'scitt-oci[sigstore]')"
            ) from None
        try:
            bundle = Bundle.from_json(data)
        except (Error, ValueError) as exc:
            raise NotVerified(f"the bundle cannot be read: {exc}") from None
        refusals = []
        for entry in trust.sigstore:
            try:
                return _verify_with(bundle, entry, subject_digest)
            except NotVerified as exc:
                refusals.append(f"trusted root {entry.name!r}: {exc.reason}")
        raise NotVerified("; ".join(refusals))
    except NotVerified as exc:
        return SignatureCheck.failed(Format.COSIGN_BUNDLE, exc.reason)
