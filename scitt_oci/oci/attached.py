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

# What is read per image. A referrers listing is written by anyone who can push, so reading is bounded;
# a listing past a bound is read as far as the bound and marked truncated, and nothing decides on it:
# a later delete (or signature) record past the bound would otherwise be hidden (`decide` rejects it
# TOO_MANY_REFERRERS). 128 statements are 2 x 128 registry reads, inside admission's 512 per review.
MAX_STATEMENTS = 128
MAX_STATEMENT_BYTES = 1024 * 1024  # one statement
MAX_STATEMENTS_TOTAL_BYTES = 16 * 1024 * 1024  # all of one image's statements held at once


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


class Referrers(list[Attached]):
    """The statements read for one image, with how many candidates were listed and whether reading
    stopped at a bound (MAX_STATEMENTS candidates, MAX_STATEMENTS_TOTAL_BYTES of statements)."""

    def __init__(self, items: list[Attached], listed: int, truncated: bool) -> None:
        super().__init__(items)
        self.listed = listed
        self.truncated = truncated


class Statements(list[bytes]):
    """The statement bytes of `Referrers`, keeping `listed` and `truncated` for `decide`."""

    def __init__(self, items: list[bytes], listed: int, truncated: bool) -> None:
        super().__init__(items)
        self.listed = listed
        self.truncated = truncated


def truncation_note(listed: int) -> str:
    """Why a reading is partial, for a reason's message and `history`."""
    return (
        f"{listed} candidate statement referrers are listed for this image; at most {MAX_STATEMENTS} "
        f"(and {MAX_STATEMENTS_TOTAL_BYTES // (1024 * 1024)} MiB of statements) are read, "
        "so what is on record cannot be known from the rest"
    )


def statement_referrers(client: ReferrerSource, repo: str, digest: str) -> Referrers:
    """The Transparent Statements attached to `repo@digest`: listed by the referrers API or the tag-schema
    fallback, with our artifactType (or our manifest when the listing lost it), whose manifest's subject is
    `digest`; at most MAX_STATEMENTS candidates and MAX_STATEMENTS_TOTAL_BYTES, in listing order, marked
    `truncated` when the listing held more. A referrer gone since it was listed is skipped."""
    listed = candidates(client.referrers(repo, digest))
    truncated = len(listed) > MAX_STATEMENTS
    out: list[Attached] = []
    total = 0
    for d in listed[:MAX_STATEMENTS]:
        if total >= MAX_STATEMENTS_TOTAL_BYTES:
            truncated = True
            break
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
            total += len(blob)
            out.append(Attached(d.digest, blob))
    return Referrers(out, len(listed), truncated)


def attached_statements(client: ReferrerSource, ref: Reference) -> Statements:
    """The statements attached to `ref` (which has a digest), as `statement_referrers` reads them."""
    assert ref.digest is not None, "attached statements are read for a digest"
    found = statement_referrers(client, ref.repository, str(ref.digest))
    return Statements([a.statement for a in found], found.listed, found.truncated)
