"""Finding our statements among an image's referrers, also when a copying tool dropped artifactType."""

from __future__ import annotations

from scitt_oci.oci import manifest as mf
from scitt_oci.oci.manifest import Descriptor
from scitt_oci.oci.reference import Reference
from scitt_oci.verify.image import MAX_STATEMENTS, attached_statements

IMAGE = "sha256:" + "ab" * 32
SUBJECT = Descriptor(mf.OCI_MANIFEST, IMAGE, 100)


class Listing:
    """An in-memory registry: manifests and blobs by digest, one referrers listing for IMAGE."""

    def __init__(self) -> None:
        self.content: dict[str, bytes] = {}
        self.listed: list[Descriptor] = []

    def add(self, data: bytes) -> str:
        digest = mf.digest_of(data)
        self.content[digest] = data
        return digest

    def referrers(self, repo: str, digest: str, artifact_type: str | None = None) -> list[Descriptor]:
        assert artifact_type is None  # filtering here would lose entries without artifactType
        return self.listed

    def manifest(self, repo: str, reference: str) -> tuple[bytes, str, str] | None:
        data = self.content.get(reference)
        return (data, mf.OCI_MANIFEST, reference) if data is not None else None

    def blob(self, repo: str, digest: str, limit: int = 0) -> bytes | None:
        return self.content.get(digest)


def _statement(listing: Listing, body: bytes, *, keep_type: bool) -> Descriptor:
    listing.add(body)
    artifact = mf.statement_artifact(SUBJECT, body, kind="push", issuer="i", service="s", created=0)
    digest = listing.add(artifact)
    return Descriptor(mf.OCI_MANIFEST, digest, len(artifact), mf.STATEMENT_ARTIFACT if keep_type else None)


def test_entries_without_artifact_type_are_read_by_their_manifest() -> None:
    listing = Listing()
    sbom = mf.canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": mf.OCI_MANIFEST,
            "artifactType": "application/spdx+json",
            "config": {"mediaType": mf.EMPTY_JSON, "digest": mf.EMPTY_DIGEST, "size": 2},
            "layers": [],
            "subject": SUBJECT.to_json(),
        }
    )
    listing.listed = [
        Descriptor(mf.OCI_MANIFEST, listing.add(sbom), len(sbom)),  # no artifactType, not ours
        _statement(listing, b"statement-one", keep_type=False),
        _statement(listing, b"statement-two", keep_type=True),
    ]
    found = attached_statements(listing, Reference.parse(f"r.example/app@{IMAGE}"))
    assert sorted(found) == [b"statement-one", b"statement-two"]


def test_entries_known_to_be_ours_come_before_unknown_ones() -> None:
    listing = Listing()
    filler = mf.canonical_json({"schemaVersion": 2, "mediaType": mf.OCI_MANIFEST, "layers": []})
    unknown = [
        Descriptor(mf.OCI_MANIFEST, listing.add(filler + b" " * i), len(filler) + i) for i in range(MAX_STATEMENTS)
    ]
    listing.listed = [*unknown, _statement(listing, b"ours", keep_type=True)]
    assert attached_statements(listing, Reference.parse(f"r.example/app@{IMAGE}")) == [b"ours"]
