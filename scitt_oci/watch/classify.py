"""What a registry event means for the record: an image push, a signature or attestation of an
image, a deletion, or something not to record (our own artifacts, referrers fallback indexes, other
referrers). Nothing here reads who signed: annotations are the pusher's claims; the worker verifies."""

from __future__ import annotations

import re
from dataclasses import dataclass

from scitt_oci.oci import manifest as mf
from scitt_oci.oci.manifest import Descriptor, Manifest
from scitt_oci.scitt.profile import Kind
from scitt_oci.signatures.model import Format
from scitt_oci.watch.events import DELETE, DEPLOY, RegistryEvent

_COSIGN_TAG = re.compile(r"^sha256-([0-9a-f]{64})\.(sig|att)$")
SIGNATURE_TYPES = {
    mf.SIGSTORE_BUNDLE: Format.COSIGN_BUNDLE,
    mf.NOTATION_SIGNATURE: Format.NOTATION,
    mf.COSIGN_OCI11_SIGNATURE: Format.COSIGN,
}


@dataclass(frozen=True)
class Decision:
    kind: Kind | None  # None: nothing to record
    subject_digest: str | None = None  # the image the statement is about
    format: Format | None = None  # signatures: which verifier checks it (the worker does, before recording)
    reason: str = ""
    children: tuple[Descriptor, ...] = ()  # platform manifests of an index, to record as pushes too

    @property
    def record(self) -> bool:
        return self.kind is not None


def skip(reason: str) -> Decision:
    return Decision(None, reason=reason)


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
    if mf.is_fallback_tag(event.tag) and manifest.is_index:
        return skip("a referrers fallback index")
    if manifest.subject is not None:
        fmt = SIGNATURE_TYPES.get(kind or "")
        if fmt is None:
            return skip(f"a referrer of type {kind!r}, not a signature")
        return Decision(Kind.SIGNATURE, manifest.subject.digest, fmt)
    cosign = _COSIGN_TAG.fullmatch(event.tag or "")
    if cosign:
        kind = Kind.ATTESTATION if cosign.group(2) == "att" else Kind.SIGNATURE
        return Decision(kind, f"sha256:{cosign.group(1)}", Format.COSIGN)
    children = tuple(d for d in manifest.manifests if d.media_type in (mf.OCI_MANIFEST, mf.DOCKER_MANIFEST))
    return Decision(Kind.PUSH, digest, children=children if manifest.is_index else ())
