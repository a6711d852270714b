"""What a registry event means for the record: an image push, a signature of an image, a deletion,
or something not to record (our own artifacts, referrers fallback indexes, other referrers)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import ExtensionOID, NameOID

from scitt_oci.oci import manifest as mf
from scitt_oci.oci.manifest import Descriptor, Manifest
from scitt_oci.scitt.profile import Kind
from scitt_oci.watch.events import DELETE, DEPLOY, RegistryEvent

_FALLBACK_TAG = re.compile(r"^sha256-[0-9a-f]{64}$")
_COSIGN_TAG = re.compile(r"^sha256-([0-9a-f]{64})\.(sig|att)$")
SIGNATURE_TYPES = {
    mf.SIGSTORE_BUNDLE: "cosign-bundle",
    mf.NOTATION_SIGNATURE: "notation",
    mf.COSIGN_OCI11_SIGNATURE: "cosign",
}


@dataclass(frozen=True)
class Decision:
    kind: Kind | None  # None: nothing to record
    subject_digest: str | None = None  # the image the statement is about
    format: str | None = None
    signer: str | None = None
    reason: str = ""
    children: tuple[Descriptor, ...] = ()  # platform manifests of an index, to record as pushes too

    @property
    def record(self) -> bool:
        return self.kind is not None


def skip(reason: str) -> Decision:
    return Decision(None, reason=reason)


def _cosign_signer(m: Manifest) -> str | None:
    for layer in m.layers:
        pem = layer.annotations.get("dev.sigstore.cosign/certificate")
        if not pem:
            continue
        try:
            cert = x509.load_pem_x509_certificate(pem.encode())
        except ValueError:
            return None
        try:
            san = cert.extensions.get_extension_for_oid(ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
            names = [str(n.value) for n in san]  # type: ignore[attr-defined]
            if names:
                return names[0]
        except x509.ExtensionNotFound:
            pass
        cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        return str(cn[0].value) if cn else cert.subject.rfc4514_string()
    return None


def _notation_signer(m: Manifest) -> str | None:
    thumbprints = m.annotations.get("io.cncf.notary.x509chain.thumbprint#S256")
    if not thumbprints:
        return None
    first = thumbprints.strip("[]").split(",")[0].strip().strip('"')
    return f"x509 sha256:{first}" if first else None


def classify(event: RegistryEvent, digest: str, manifest: Manifest | None) -> Decision:
    """The decision for one event about `digest` (`manifest` is None for deletions)."""
    if event.action == DELETE:
        return Decision(Kind.DELETE, digest)
    if event.action == DEPLOY:
        return Decision(Kind.DEPLOY, digest)
    assert manifest is not None
    kind = manifest.effective_artifact_type
    if kind == mf.STATEMENT_ARTIFACT:
        return skip("a scitt-oci statement artifact (our own)")
    if event.tag and _FALLBACK_TAG.fullmatch(event.tag) and manifest.is_index:
        return skip("a referrers fallback index")
    if manifest.subject is not None:
        fmt = SIGNATURE_TYPES.get(kind or "")
        if fmt is None:
            return skip(f"a referrer of type {kind!r}, not a signature")
        signer = _notation_signer(manifest) if fmt == "notation" else None
        return Decision(Kind.SIGNATURE, manifest.subject.digest, fmt, signer)
    cosign = _COSIGN_TAG.fullmatch(event.tag or "")
    if cosign:
        return Decision(Kind.SIGNATURE, f"sha256:{cosign.group(1)}", "cosign", _cosign_signer(manifest))
    children = tuple(d for d in manifest.manifests if d.media_type in (mf.OCI_MANIFEST, mf.DOCKER_MANIFEST))
    return Decision(Kind.PUSH, digest, children=children if manifest.is_index else ())
