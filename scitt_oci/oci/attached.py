"""What a registry holds for an image, read one way everywhere: the digest a tag names now, and the
Transparent Statements attached to a digest as referrers.

`verify`, `history`, admission, promotion and the watcher all read through these two functions, so
each rule is written once: a statement counts only when its manifest is our artifact and its subject
is the image asked about (a fallback index is a tag anyone may write, so an entry listed under one
digest may name another), and a tag resolves to a digest a path can carry, or to nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from scitt_oci.oci import manifest as mf
from scitt_oci.oci.manifest import Descriptor
from scitt_oci.oci.reference import Digest, Reference

MAX_STATEMENTS = 64  # statements read per image: a referrers listing is written by anyone who can push
MAX_STATEMENT_BYTES = 1024 * 1024


class ReferrerSource(Protocol):
    """Where referrers are read from: a registry (`RegistryClient`), an OCI image layout, a test double."""

    def referrers(self, repo: str, digest: str, artifact_type: str | None = None) -> list[Descriptor]: ...

    def manifest(self, repo: str, reference: str) -> tuple[bytes, str, str] | None: ...

    def blob(self, repo: str, digest: str, limit: int = ...) -> bytes | None: ...


class TagSource(Protocol):
    """Where tags are resolved: anything answering a manifest HEAD by tag or digest."""

    def head_manifest(self, repo: str, reference: str) -> Descriptor | None: ...


@dataclass(frozen=True)
class Attached:
    """One Transparent Statement attached to an image: the referrer manifest holding it, and its bytes."""

    referrer: str  # the digest of the referrer manifest
    statement: bytes


def resolve_tag(client: TagSource, repo: str, tag: str) -> Descriptor | None:
    """The manifest `tag` names now in `repo`, or None when there is no such tag. The digest the registry
    answers is checked to be a digest before anyone uses it in a path or a statement (MalformedError)."""
    found = client.head_manifest(repo, tag)
    if found is not None:
        Digest.parse(found.digest)
    return found


def pin(client: TagSource, ref: Reference) -> Reference | None:
    """`ref` by digest: itself when it has one, else with the digest its tag (default `latest`) names now;
    None when the tag does not exist."""
    if ref.digest is not None:
        return ref
    found = resolve_tag(client, ref.repository, ref.tag or "latest")
    return None if found is None else ref.with_digest(Digest.parse(found.digest))


def candidates(listed: Sequence[Descriptor]) -> list[Descriptor]:
    """From the listing alone: ours first, then entries whose artifactType a copying tool dropped
    (`skopeo copy` leaves fallback index entries without it), which only their manifests can tell."""
    ours = [d for d in listed if d.artifact_type == mf.STATEMENT_ARTIFACT]
    unknown = [d for d in listed if d.artifact_type is None and d.media_type == mf.OCI_MANIFEST]
    return ours + unknown


def statement_referrers(client: ReferrerSource, repo: str, digest: str) -> list[Attached]:
    """The Transparent Statements attached to `repo@digest`: listed by the referrers API or the tag-schema
    fallback, with our artifactType (or our manifest when the listing lost it), whose manifest's subject is
    `digest`; at most MAX_STATEMENTS, in listing order. A referrer gone since it was listed is skipped."""
    out = []
    for d in candidates(client.referrers(repo, digest))[:MAX_STATEMENTS]:
        fetched = client.manifest(repo, d.digest)
        if fetched is None:
            continue
        artifact = mf.parse(fetched[0], fetched[1])
        if not mf.is_statement_artifact(artifact) or not artifact.layers:
            continue
        if artifact.subject is None or artifact.subject.digest != digest:
            continue  # listed for another subject: not trusted (a foreign entry in a fallback index)
        blob = client.blob(repo, artifact.layers[0].digest, limit=MAX_STATEMENT_BYTES)
        if blob is not None:
            out.append(Attached(d.digest, blob))
    return out


def attached_statements(client: ReferrerSource, ref: Reference) -> list[bytes]:
    """The statements attached to `ref` (which has a digest), as `statement_referrers` reads them."""
    assert ref.digest is not None, "attached statements are read for a digest"
    return [a.statement for a in statement_referrers(client, ref.repository, str(ref.digest))]
