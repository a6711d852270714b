"""Where promotion reads an image and its referrers from, and writes them to.

`ImageStore` is the small interface the promotion needs; `RegistryStore` puts it over the registry
client (referrers API or tag-schema fallback, both through the client's own attach and merge), and
`scitt_oci.promote.layout` over an OCI image layout directory.
"""

from __future__ import annotations

from typing import Protocol

from scitt_oci.oci import manifest as mf
from scitt_oci.oci.attached import resolve_tag
from scitt_oci.oci.client import RegistryClient, RegistryError
from scitt_oci.oci.manifest import Descriptor

# Image layers pass through memory on their way between registries; larger ones are refused by name.
MAX_COPY_BLOB_BYTES = 512 * 1024 * 1024


class ImageStore(Protocol):
    """One repository's content, addressed by digest, plus its tags and referrers."""

    name: str  # for messages: registry/repository or oci:DIR
    repository: str

    # The reading side has the same shape as `RegistryClient` (so the verifier reads either).
    def referrers(self, repo: str, digest: str, artifact_type: str | None = None) -> list[Descriptor]: ...

    def manifest(self, repo: str, reference: str) -> tuple[bytes, str, str] | None: ...

    def blob(self, repo: str, digest: str, limit: int = ...) -> bytes | None: ...

    def has_blob(self, digest: str) -> bool: ...

    def has_manifest(self, digest: str) -> bool: ...

    def tag_digest(self, tag: str) -> str | None: ...

    def put_blob(self, data: bytes) -> None: ...

    def mount(self, digest: str, source: ImageStore) -> bool:
        """Take blob `digest` from `source` without the bytes passing through us, where the store can."""

    def put_manifest(self, data: bytes, media_type: str, tag: str | None = None) -> None:
        """Store a manifest by digest, or point `tag` at it (the caller stores it by digest first)."""

    def keep(self, image: Descriptor) -> None:
        """Hold on to an untagged image (a layout lists it in index.json; a registry keeps it anyway)."""

    def put_referrer(self, subject: Descriptor, data: bytes, media_type: str) -> None:
        """Store a referrer manifest (its blobs already stored) and list it among `subject`'s referrers,
        merged with what is listed already."""


class RegistryStore:
    """An `ImageStore` over one repository of a registry."""

    def __init__(self, client: RegistryClient, repository: str) -> None:
        self.client = client
        self.repository = repository
        self.name = f"{client.settings.name}/{repository}"

    def referrers(self, repo: str, digest: str, artifact_type: str | None = None) -> list[Descriptor]:
        return self.client.referrers(repo, digest, artifact_type)

    def manifest(self, repo: str, reference: str) -> tuple[bytes, str, str] | None:
        return self.client.manifest(repo, reference)

    def blob(self, repo: str, digest: str, limit: int = MAX_COPY_BLOB_BYTES) -> bytes | None:
        return self.client.blob(repo, digest, limit)

    def has_blob(self, digest: str) -> bool:
        scope = f"repository:{self.repository}:pull"
        return self.client.request("HEAD", f"/v2/{self.repository}/blobs/{digest}", scope=scope).status_code == 200

    def has_manifest(self, digest: str) -> bool:
        return self.client.head_manifest(self.repository, digest) is not None

    def tag_digest(self, tag: str) -> str | None:
        found = resolve_tag(self.client, self.repository, tag)
        return found.digest if found else None

    def put_blob(self, data: bytes) -> None:
        self.client.push_blob(self.repository, data, check_exists=False)

    def mount(self, digest: str, source: ImageStore) -> bool:
        """A cross-repository mount (distribution-spec), when `source` is another repository of this registry."""
        if not isinstance(source, RegistryStore) or source.client.settings.url != self.client.settings.url:
            return False
        scope = f"repository:{self.repository}:pull,push repository:{source.repository}:pull"
        try:
            r = self.client.request(
                "POST",
                f"/v2/{self.repository}/blobs/uploads/?mount={digest}&from={source.repository}",
                scope=scope,
                ok=(201, 202),
            )
            if r.status_code == 202 and r.headers.get("location"):  # not mounted: an upload began instead
                self.client.request("DELETE", r.headers["location"], scope=scope, ok=(204, 202, 200))
        except RegistryError:
            return False  # e.g. no pull right on the other repository: upload the bytes instead
        return r.status_code == 201

    def put_manifest(self, data: bytes, media_type: str, tag: str | None = None) -> None:
        self.client.push_manifest(self.repository, data, media_type, tag)

    def keep(self, image: Descriptor) -> None:
        return None  # a registry keeps what was pushed by digest

    def put_referrer(self, subject: Descriptor, data: bytes, media_type: str) -> None:
        if media_type != mf.OCI_MANIFEST:
            raise RegistryError(f"{self.name}: a referrer must be an OCI image manifest, not {media_type}")
        # attach: pushes the manifest by digest and, where the registry does not process its subject,
        # merges the entry into the tag-schema index (never dropping an entry already there).
        self.client.attach(self.repository, subject, data, [])
