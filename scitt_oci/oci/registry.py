"""What the verifier and the watcher need of a registry, as a protocol: `RegistryClient` (HTTP, the
OCI distribution spec) is the implementation; the unit tests use an in-memory one (tests/memregistry.py).

`RegistryReader` is the reading side (what `verify`, `history` and admission read: manifests by digest
or tag, blobs, referrers, tags and the catalog); `Registry` adds what the watcher writes and checks:
referrer attachment with the tag-schema fallback index, and re-listing entries a concurrent writer
dropped. Errors are `RegistryError` (`TransientRegistryError` when worth retrying) in both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

from scitt_oci.oci.manifest import Descriptor

if TYPE_CHECKING:
    from scitt_oci.oci.client import RegistryClient


class RegistryReader(Protocol):
    """The reading side of one registry."""

    def manifest(self, repo: str, reference: str) -> tuple[bytes, str, str] | None:
        """(bytes, media type, digest) of a manifest by digest or tag; None when absent. Digests are checked."""

    def head_manifest(self, repo: str, reference: str) -> Descriptor | None:
        """The descriptor of a manifest by digest or tag (its size and digest); None when absent."""

    def blob(self, repo: str, digest: str, limit: int = ...) -> bytes | None:
        """A blob's bytes (checked against `digest`, at most `limit`); None when absent."""

    def referrers(self, repo: str, digest: str, artifact_type: str | None = None) -> list[Descriptor]:
        """Referrers of `digest`: the referrers API when the registry has it, else the tag-schema index."""

    def catalog(self) -> list[str]:
        """Every repository's name."""

    def tags(self, repo: str) -> list[str]:
        """Every tag of `repo` (empty when the repository is unknown)."""


class Registry(RegistryReader, Protocol):
    """A registry the watcher reads and writes."""

    # Whether the registry answers the referrers API: None until a call found out.
    referrers_api: bool | None

    def pushed_here(self, repo: str, digest: str) -> bool:
        """Whether this client recently wrote the manifest `digest` as a referrer or a referrers index."""

    def attach(
        self, repo: str, subject: Descriptor, artifact: bytes, layers: list[bytes], *, also: Sequence[Descriptor] = ()
    ) -> str:
        """Push a referrer manifest and its layers; list it (and `also`) in the fallback index of `subject`
        when the registry does not process `subject` itself. Idempotent. Returns the referrer's digest."""

    def referrer_entry(self, repo: str, digest: str, subject: str) -> Descriptor | None:
        """The index entry for the manifest `digest` if it exists and is a referrer of `subject`, else None."""

    def list_referrers(self, repo: str, subject: str, wanted: Sequence[Descriptor]) -> None:
        """Make the tag-schema index of `subject` list every descriptor of `wanted`, keeping other entries."""


if TYPE_CHECKING:  # mypy checks that the HTTP client is a `Registry`

    def _client_is_a_registry(client: RegistryClient) -> Registry:
        return client
