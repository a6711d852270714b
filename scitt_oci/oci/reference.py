"""OCI digests and image references (`registry/repository[:tag][@digest]`), per the OCI image and distribution specs."""

from __future__ import annotations

import re
from dataclasses import dataclass

from scitt_oci.cose.hash_envelope import BY_OCI_ALGORITHM
from scitt_oci.errors import MalformedError

# Registered algorithms and the length of their hex encoding (image-spec descriptor.md).
# The digest algorithms OCI content is addressed by here, and their hex lengths (COSE ids: hash_envelope).
DIGEST_HEX_LENGTHS = {"sha256": 64, "sha512": 128}
_REPOSITORY = re.compile(r"^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
_REGISTRY = re.compile(
    r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*(?::[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]+\](?::[0-9]{1,5})?$"
)


DOCKER_HUB = "docker.io"
_DOCKER_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
_DEFAULT_PORTS = {"https": ":443", "http": ":80"}
_GLOB = re.compile(r"[*?\[]")


def normalize_registry(host: str, scheme: str = "https") -> str:
    """One spelling per registry: host names in lower case, the scheme's default port left out
    (references carry no scheme: `https`, the default, drops `:443`), and Docker Hub's aliases as
    `docker.io`. Two different host names stay two registries, even if they resolve alike."""
    name = host.lower()
    default = _DEFAULT_PORTS.get(scheme, "")
    if default and name.endswith(default):
        name = name[: -len(default)]
    return DOCKER_HUB if name in _DOCKER_HUB_ALIASES else name


def normalize_name(name: str) -> str:
    """`registry/repository` (or a glob over it) with the registry normalised and Docker Hub's official
    images (a one-component repository) under `library/`, as Docker Hub names them."""
    registry, slash, repository = name.partition("/")
    if not slash:
        return name
    registry = normalize_registry(registry)
    if registry == DOCKER_HUB and repository and "/" not in repository and not _GLOB.search(repository):
        repository = f"library/{repository}"
    return f"{registry}/{repository}"


def valid_repository(name: str) -> bool:
    return len(name) <= 255 and bool(_REPOSITORY.fullmatch(name))


def valid_tag(name: str) -> bool:
    """A tag by the distribution spec's grammar `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}`."""
    return bool(_TAG.fullmatch(name))


@dataclass(frozen=True)
class Digest:
    algorithm: str
    hex: str

    @classmethod
    def parse(cls, text: str) -> Digest:
        alg, sep, encoded = text.partition(":")
        if not sep or alg not in DIGEST_HEX_LENGTHS:
            raise MalformedError(f"digest {text[:80]!r} must be sha256:<64 hex> or sha512:<128 hex>")
        if len(encoded) != DIGEST_HEX_LENGTHS[alg] or not re.fullmatch(r"[0-9a-f]+", encoded):
            raise MalformedError(
                f"digest {text[:80]!r}: {alg} needs {DIGEST_HEX_LENGTHS[alg]} lowercase hex characters"
            )
        return cls(alg, encoded)

    @classmethod
    def from_bytes(cls, algorithm: str, raw: bytes) -> Digest:
        return cls.parse(f"{algorithm}:{raw.hex()}")

    @property
    def raw(self) -> bytes:
        return bytes.fromhex(self.hex)

    @property
    def cose_hash_alg(self) -> int:
        return BY_OCI_ALGORITHM[self.algorithm]

    def __str__(self) -> str:
        return f"{self.algorithm}:{self.hex}"


@dataclass(frozen=True)
class Reference:
    registry: str
    repository: str
    tag: str | None = None
    digest: Digest | None = None

    @classmethod
    def parse(cls, text: str) -> Reference:
        """Parse `registry/repo[:tag][@digest]`, also with an `oci://` prefix. The registry part is required."""
        original = text
        if text.startswith("oci://"):
            text = text[len("oci://") :]
        name, at, digest_text = text.partition("@")
        digest = Digest.parse(digest_text) if at else None
        registry, slash, rest = name.partition("/")
        if not slash or not rest:
            raise MalformedError(
                f"image reference {original[:200]!r} must name a registry and repository (registry/repo)"
            )
        tag = None
        last = rest.rsplit("/", 1)[-1]
        if ":" in last:
            rest, _, tag = rest.rpartition(":")
            if not _TAG.fullmatch(tag):
                raise MalformedError(f"image reference {original[:200]!r}: tag {tag!r} is not a valid tag")
        if not _REGISTRY.fullmatch(registry):
            raise MalformedError(f"image reference {original[:200]!r}: {registry!r} is not a registry host[:port]")
        if not _REPOSITORY.fullmatch(rest) or len(rest) > 255:
            raise MalformedError(f"image reference {original[:200]!r}: {rest!r} is not a valid repository name")
        return cls(registry, rest, tag, digest)

    def with_digest(self, digest: Digest) -> Reference:
        return Reference(self.registry, self.repository, None, digest)

    def uri(self) -> str:
        """The `oci://registry/repository@digest` form used in statements (digest required)."""
        if self.digest is None:
            raise MalformedError(f"{self} has no digest")
        return f"oci://{self.registry}/{self.repository}@{self.digest}"

    def __str__(self) -> str:
        out = f"{self.registry}/{self.repository}"
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out
