"""OCI manifests and indexes (image-spec 1.1): parsing with limits, and the artifacts scitt-oci writes."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any

from scitt_oci import jsonin
from scitt_oci.errors import MalformedError
from scitt_oci.oci.reference import Digest

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_TYPES = (OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST)
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
EMPTY_JSON = "application/vnd.oci.empty.v1+json"
EMPTY_BLOB = b"{}"
EMPTY_DIGEST = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"

# What scitt-oci attaches: RFC 9943's media type for a (transparent) statement.
STATEMENT_ARTIFACT = "application/scitt-statement+cose"
ANNOTATION_PREFIX = "dev.scitt-oci."
ANN_KIND = ANNOTATION_PREFIX + "kind"
ANN_ISSUER = ANNOTATION_PREFIX + "issuer"
ANN_TS = ANNOTATION_PREFIX + "transparency-service"
ANN_CREATED = "org.opencontainers.image.created"

# Signature artifacts a watcher recognises.
SIGSTORE_BUNDLE = "application/vnd.dev.sigstore.bundle.v0.3+json"
NOTATION_SIGNATURE = "application/vnd.cncf.notary.signature"
COSIGN_OCI11_SIGNATURE = "application/vnd.dev.cosign.artifact.sig.v1+json"

MAX_MANIFEST_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    artifact_type: str | None = None
    annotations: dict[str, str] = field(default_factory=dict)
    platform: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.artifact_type:
            out["artifactType"] = self.artifact_type
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        if self.platform:
            out["platform"] = dict(self.platform)
        return out


def _descriptor(value: object, where: str) -> Descriptor:
    if not isinstance(value, dict):
        raise MalformedError(f"{where} must be a descriptor object")
    media_type, digest, size = value.get("mediaType"), value.get("digest"), value.get("size")
    if not isinstance(media_type, str) or not isinstance(digest, str) or not isinstance(size, int) or size < 0:
        raise MalformedError(f"{where} needs mediaType, digest and a non-negative size")
    Digest.parse(digest)
    annotations = value.get("annotations") or {}
    if not isinstance(annotations, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()
    ):
        raise MalformedError(f"{where}.annotations must map strings to strings")
    artifact_type = value.get("artifactType")
    platform = value.get("platform")
    return Descriptor(
        media_type,
        digest,
        size,
        artifact_type if isinstance(artifact_type, str) else None,
        annotations,
        platform if isinstance(platform, dict) else None,
    )


@dataclass(frozen=True)
class Manifest:
    """An image manifest or an index, as far as scitt-oci needs to read it."""

    media_type: str
    artifact_type: str | None
    config: Descriptor | None
    layers: tuple[Descriptor, ...]
    manifests: tuple[Descriptor, ...]
    subject: Descriptor | None
    annotations: dict[str, str]

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES

    @property
    def effective_artifact_type(self) -> str | None:
        """artifactType, else the config's media type (how referrers lists describe older artifacts)."""
        return self.artifact_type or (self.config.media_type if self.config else None)


def parse(data: bytes, content_type: str | None = None) -> Manifest:
    """Parse manifest bytes; `content_type` (from the registry) is used when the body names no mediaType."""
    doc = jsonin.load(data, "manifest", MAX_MANIFEST_BYTES)
    if not isinstance(doc, dict) or doc.get("schemaVersion") != 2:
        raise MalformedError("manifest must be a JSON object with schemaVersion 2")
    media_type = doc.get("mediaType") or (content_type or "").split(";")[0].strip()
    if media_type not in MANIFEST_TYPES:
        if "manifests" in doc:
            media_type = OCI_INDEX
        elif "layers" in doc:
            media_type = OCI_MANIFEST
        else:
            raise MalformedError(f"manifest media type {media_type!r} is not an OCI or Docker v2 manifest or index")
    config = _descriptor(doc["config"], "config") if "config" in doc else None
    layers = tuple(_descriptor(d, f"layers[{i}]") for i, d in enumerate(doc.get("layers") or []))
    manifests = tuple(_descriptor(d, f"manifests[{i}]") for i, d in enumerate(doc.get("manifests") or []))
    subject = _descriptor(doc["subject"], "subject") if doc.get("subject") is not None else None
    annotations = doc.get("annotations") or {}
    if not isinstance(annotations, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in annotations.items()
    ):
        raise MalformedError("annotations must map strings to strings")
    artifact_type = doc.get("artifactType")
    return Manifest(
        media_type,
        artifact_type if isinstance(artifact_type, str) else None,
        config,
        layers,
        manifests,
        subject,
        annotations,
    )


def referrer_entry(data: bytes, media_type: str, digest: str, subject: str) -> Descriptor | None:
    """The referrers-list entry of the manifest `data` (stored as `digest`) when it is a referrer of
    `subject`, else None: its descriptor with artifact type and annotations, as the referrers API lists it."""
    m = parse(data, media_type)
    if m.subject is None or m.subject.digest != subject:
        return None
    return Descriptor(m.media_type, digest, len(data), m.effective_artifact_type, m.annotations)


def is_statement_artifact(m: Manifest) -> bool:
    """Whether `m` attaches a scitt-oci Transparent Statement: by its artifactType (or config media type),
    or, when a copying tool rewrote those, by its first layer's media type and our kind annotation."""
    if m.effective_artifact_type == STATEMENT_ARTIFACT:
        return True
    return ANN_KIND in m.annotations and bool(m.layers) and m.layers[0].media_type == STATEMENT_ARTIFACT


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical_json(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


def statement_artifact(
    subject: Descriptor, statement_blob: bytes, *, kind: str, issuer: str, service: str, created: int
) -> bytes:
    """The referrer manifest that attaches a Transparent Statement to `subject`.

    Deterministic (time from the statement's iat), so re-attaching after a crash pushes the same bytes.
    """
    created_text = dt.datetime.fromtimestamp(created, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    doc = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": STATEMENT_ARTIFACT,
        "config": {"mediaType": EMPTY_JSON, "digest": EMPTY_DIGEST, "size": 2},
        "layers": [{"mediaType": STATEMENT_ARTIFACT, "digest": digest_of(statement_blob), "size": len(statement_blob)}],
        "subject": {"mediaType": subject.media_type, "digest": subject.digest, "size": subject.size},
        "annotations": {ANN_KIND: kind, ANN_ISSUER: issuer, ANN_TS: service, ANN_CREATED: created_text},
    }
    return canonical_json(doc)


def fallback_tag(digest: str) -> str:
    """The referrers tag-schema tag for a subject digest (distribution-spec 1.1)."""
    alg, _, hexpart = digest.partition(":")
    return f"{alg[:32]}-{hexpart[:64]}"


# What `fallback_tag` makes of the digests we read (sha256, sha512: the hex cut to 64 characters). A tag
# like this names a referrers index (ours or another tool's), never an image.
FALLBACK_TAG = re.compile(r"(sha256|sha512)-[0-9a-f]{64}")


def is_fallback_tag(tag: str | None) -> bool:
    return tag is not None and FALLBACK_TAG.fullmatch(tag) is not None


def empty_index() -> dict[str, Any]:
    return {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
