"""An in-memory OCI registry for unit tests, implementing `scitt_oci.oci.registry.Registry`.

Written to the distribution spec (1.1) where the watcher and the verifier depend on it: manifests by
digest and by tag, blobs, a manifest PUT refused (MANIFEST_BLOB_UNKNOWN) while a blob or a child
manifest it names is missing, a DELETE by digest that removes the tags pointing at it and one by tag
that removes only the tag, and referrers either from the referrers API (every manifest whose subject
is the digest; `referrers_api=False` for a registry without it) or from the tag-schema fallback index
the client maintains, as `RegistryClient` does. Faults: `fail_next(n)` makes the next n calls fail
as a registry that is down would. The real registry (docker-registry) stays in the e2e tests.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from scitt_oci.oci import manifest as mf
from scitt_oci.oci.client import RegistryError, TransientRegistryError
from scitt_oci.oci.manifest import Descriptor
from scitt_oci.oci.registry import Registry


@dataclass
class _Repository:
    manifests: dict[str, tuple[bytes, str]] = field(default_factory=dict)  # digest -> (bytes, media type)
    tags: dict[str, str] = field(default_factory=dict)  # tag -> digest
    blobs: dict[str, bytes] = field(default_factory=dict)


class MemRegistry:
    def __init__(self, name: str = "registry.test", *, referrers_api: bool = True) -> None:
        self.name = name
        self.serves_referrers = referrers_api  # what the server does
        self.referrers_api: bool | None = None  # what the client found out (the protocol's capability cache)
        self.repositories: dict[str, _Repository] = {}
        self.calls: Counter[str] = Counter()
        self._faults: list[RegistryError] = []
        self._own: set[tuple[str, str]] = set()

    # ----- faults and bookkeeping -----
    def fail_next(self, n: int = 1, status: int = 503) -> None:
        """The next `n` calls fail with `status` (5xx and 429: transient, as `RegistryClient` says)."""
        kind = TransientRegistryError if status >= 500 or status == 429 else RegistryError
        self._faults += [kind(f"injected: HTTP {status}", status) for _ in range(n)]

    def _call(self, name: str) -> None:
        self.calls[name] += 1
        if self._faults:
            raise self._faults.pop(0)

    def _repo(self, repo: str) -> _Repository:
        return self.repositories.setdefault(repo, _Repository())

    def _resolve(self, repo: str, reference: str) -> str | None:
        r = self.repositories.get(repo)
        if r is None:
            return None
        digest = reference if ":" in reference else r.tags.get(reference)
        return digest if digest in r.manifests else None

    # ----- writing, as a client pushing to the registry -----
    def push_blob(self, repo: str, data: bytes) -> str:
        self._call("push_blob")
        digest = mf.digest_of(data)
        self._repo(repo).blobs[digest] = data
        return digest

    def push_manifest(self, repo: str, data: bytes, media_type: str, tag: str | None = None) -> str:
        self._call("push_manifest")
        parsed = mf.parse(data, media_type)
        r = self._repo(repo)
        named = [*parsed.layers, *([parsed.config] if parsed.config else [])]
        unknown = [d.digest for d in named if d.digest not in r.blobs]
        unknown += [d.digest for d in parsed.manifests if d.digest not in r.manifests]
        if unknown:
            raise RegistryError(f"PUT {repo}: HTTP 400 MANIFEST_BLOB_UNKNOWN {unknown[0]}", 400)
        digest = mf.digest_of(data)
        r.manifests[digest] = (data, parsed.media_type)
        if tag is not None:
            r.tags[tag] = digest
        return digest

    def delete_manifest(self, repo: str, reference: str) -> bool:
        """DELETE by digest (the manifest and its tags) or by tag (the tag only)."""
        self._call("delete_manifest")
        r = self.repositories.get(repo)
        if r is None:
            return False
        if ":" not in reference:
            return r.tags.pop(reference, None) is not None
        if r.manifests.pop(reference, None) is None:
            return False
        r.tags = {t: d for t, d in r.tags.items() if d != reference}
        return True

    def delete_blob(self, repo: str, digest: str) -> bool:
        self._call("delete_blob")
        return self._repo(repo).blobs.pop(digest, None) is not None

    # ----- Registry: reading -----
    def manifest(self, repo: str, reference: str) -> tuple[bytes, str, str] | None:
        self._call("manifest")
        digest = self._resolve(repo, reference)
        if digest is None:
            return None
        data, media_type = self.repositories[repo].manifests[digest]
        return data, media_type, digest

    def head_manifest(self, repo: str, reference: str) -> Descriptor | None:
        self._call("head_manifest")
        digest = self._resolve(repo, reference)
        if digest is None:
            return None
        data, media_type = self.repositories[repo].manifests[digest]
        return Descriptor(media_type, digest, len(data))

    def blob(self, repo: str, digest: str, limit: int = 16 * 1024 * 1024) -> bytes | None:
        self._call("blob")
        data = self.repositories.get(repo, _Repository()).blobs.get(digest)
        if data is not None and len(data) > limit:
            raise RegistryError(f"{repo} blob {digest}: {len(data)} bytes is more than the {limit} read")
        return data

    def referrers(self, repo: str, digest: str, artifact_type: str | None = None) -> list[Descriptor]:
        self._call("referrers")
        self.referrers_api = self.serves_referrers
        if self.serves_referrers:
            manifests = self.repositories.get(repo, _Repository()).manifests
            found = [e for d, (data, t) in manifests.items() if (e := mf.referrer_entry(data, t, d, digest))]
        else:
            found = list(self._fallback_index(repo, digest).manifests)
        return [d for d in found if artifact_type is None or d.artifact_type == artifact_type]

    def _fallback_index(self, repo: str, subject: str) -> mf.Manifest:
        digest = self._resolve(repo, mf.fallback_tag(subject))
        if digest is None:
            return mf.parse(mf.canonical_json(mf.empty_index()), mf.OCI_INDEX)
        data, media_type = self.repositories[repo].manifests[digest]
        found = mf.parse(data, media_type)
        if not found.is_index:  # as RegistryClient: a fallback tag naming anything else is not trusted
            raise RegistryError(f"{repo}:{mf.fallback_tag(subject)} is a {found.media_type}, not a referrers index")
        return found

    def catalog(self) -> list[str]:
        self._call("catalog")
        return sorted(name for name, r in self.repositories.items() if r.manifests)

    def tags(self, repo: str) -> list[str]:
        self._call("tags")
        return sorted(self.repositories.get(repo, _Repository()).tags)

    # ----- Registry: what the watcher writes -----
    def pushed_here(self, repo: str, digest: str) -> bool:
        return (repo, digest) in self._own

    def attach(
        self, repo: str, subject: Descriptor, artifact: bytes, layers: list[bytes], *, also: Sequence[Descriptor] = ()
    ) -> str:
        self.push_blob(repo, mf.EMPTY_BLOB)
        for blob in layers:
            self.push_blob(repo, blob)
        digest = self.push_manifest(repo, artifact, mf.OCI_MANIFEST)
        self._own.add((repo, digest))
        if self.serves_referrers:  # the registry answered with OCI-Subject
            self.referrers_api = True
            return digest
        parsed = mf.parse(artifact, mf.OCI_MANIFEST)
        entry = Descriptor(mf.OCI_MANIFEST, digest, len(artifact), parsed.effective_artifact_type, parsed.annotations)
        self.list_referrers(repo, subject.digest, [entry, *also])
        return digest

    def referrer_entry(self, repo: str, digest: str, subject: str) -> Descriptor | None:
        fetched = self.manifest(repo, digest)
        return None if fetched is None else mf.referrer_entry(fetched[0], fetched[1], digest, subject)

    def list_referrers(self, repo: str, subject: str, wanted: Sequence[Descriptor]) -> None:
        written = self.write_index(repo, subject, wanted)
        if written is not None:
            self._own.add((repo, written))

    def write_index(self, repo: str, subject: str, wanted: Sequence[Descriptor]) -> str | None:
        """Add what `wanted` lacks to the fallback index of `subject` (as any tool would); its new digest."""
        current = list(self._fallback_index(repo, subject).manifests)
        present = {d.digest for d in current}
        missing = [d for d in wanted if d.digest not in present]
        if not missing:
            return None
        doc = mf.empty_index()
        doc["manifests"] = [d.to_json() for d in [*current, *missing]]
        return self.push_manifest(repo, mf.canonical_json(doc), mf.OCI_INDEX, mf.fallback_tag(subject))


# ----- test content -----
def push_image(registry: MemRegistry, repo: str, tag: str | None = None, *, seed: str = "0") -> Descriptor:
    """A small image (config and one layer, unique by `seed`); returns its descriptor."""
    config = f'{{"seed":"{seed}"}}'.encode()
    layer = f"layer {seed}".encode()
    doc = {
        "schemaVersion": 2,
        "mediaType": mf.OCI_MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": mf.digest_of(config),
            "size": len(config),
        },
        "layers": [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": mf.digest_of(layer), "size": len(layer)}
        ],
    }
    registry.push_blob(repo, config)
    registry.push_blob(repo, layer)
    data = mf.canonical_json(doc)
    return Descriptor(mf.OCI_MANIFEST, registry.push_manifest(repo, data, mf.OCI_MANIFEST, tag), len(data))


def push_index(registry: MemRegistry, repo: str, children: Sequence[Descriptor], tag: str | None = None) -> Descriptor:
    """An image index over `children` (pushed before), each given a linux platform."""
    archs = ["amd64", "arm64", "s390x", "ppc64le"]
    doc = {
        "schemaVersion": 2,
        "mediaType": mf.OCI_INDEX,
        "manifests": [
            {**c.to_json(), "platform": {"os": "linux", "architecture": archs[i % len(archs)]}}
            for i, c in enumerate(children)
        ],
    }
    data = mf.canonical_json(doc)
    return Descriptor(mf.OCI_INDEX, registry.push_manifest(repo, data, mf.OCI_INDEX, tag), len(data))


def push_referrer(
    registry: MemRegistry, repo: str, subject: Descriptor, artifact_type: str, payload: bytes, layer_type: str
) -> Descriptor:
    """A referrer artifact of `subject` (a signature, say) with one layer, listed as a signer tool would."""
    registry.push_blob(repo, mf.EMPTY_BLOB)
    registry.push_blob(repo, payload)
    doc = {
        "schemaVersion": 2,
        "mediaType": mf.OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": {"mediaType": mf.EMPTY_JSON, "digest": mf.EMPTY_DIGEST, "size": 2},
        "layers": [{"mediaType": layer_type, "digest": mf.digest_of(payload), "size": len(payload)}],
        "subject": {"mediaType": subject.media_type, "digest": subject.digest, "size": subject.size},
    }
    data = mf.canonical_json(doc)
    digest = registry.push_manifest(repo, data, mf.OCI_MANIFEST)
    entry = Descriptor(mf.OCI_MANIFEST, digest, len(data), artifact_type)
    if not registry.serves_referrers:
        registry.write_index(repo, subject.digest, [entry])
    return entry


if TYPE_CHECKING:  # mypy checks that the double is a `Registry`

    def _is_a_registry(registry: MemRegistry) -> Registry:
        return registry
