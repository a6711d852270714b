"""Kubernetes AdmissionReview v1 and Gatekeeper external-data documents (pure: JSON in, JSON out).

Images are read from Pods and from the pod templates of Deployments, ReplicaSets, StatefulSets,
DaemonSets, Jobs and CronJobs: containers, init containers and ephemeral containers, and image
volumes (`volumes[].image.reference`: an OCI image whose content is mounted into the containers).
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from scitt_oci import jsonin
from scitt_oci.errors import MalformedError
from scitt_oci.oci.reference import Reference

ADMISSION_API = "admission.k8s.io/v1"
GATEKEEPER_API = "externaldata.gatekeeper.sh/v1beta1"
MAX_REVIEW_BYTES = 3 * 1024 * 1024

POD_SPEC_PATHS: dict[str, tuple[str, ...]] = {
    "Pod": ("spec",),
    "Deployment": ("spec", "template", "spec"),
    "ReplicaSet": ("spec", "template", "spec"),
    "StatefulSet": ("spec", "template", "spec"),
    "DaemonSet": ("spec", "template", "spec"),
    "Job": ("spec", "template", "spec"),
    "CronJob": ("spec", "jobTemplate", "spec", "template", "spec"),
}
CONTAINER_LISTS = ("initContainers", "containers", "ephemeralContainers")


@dataclass(frozen=True)
class ImageUse:
    pointer: str  # JSON pointer to the image string, for a patch
    image: str


@dataclass(frozen=True)
class Review:
    uid: str
    kind: str
    namespace: str
    name: str
    images: tuple[ImageUse, ...]
    dry_run: bool = False


def parse_review(body: bytes) -> Review:
    doc = jsonin.load(body, "AdmissionReview", MAX_REVIEW_BYTES)
    if not isinstance(doc, dict) or doc.get("kind") != "AdmissionReview" or doc.get("apiVersion") != ADMISSION_API:
        raise MalformedError(f"expected an {ADMISSION_API} AdmissionReview")
    request = doc.get("request")
    if not isinstance(request, dict) or not isinstance(request.get("uid"), str):
        raise MalformedError("AdmissionReview.request with a uid is required")
    kind = (request.get("kind") or {}).get("kind") if isinstance(request.get("kind"), dict) else None
    obj = request.get("object")
    images = _pod_images(str(kind), obj) if kind in POD_SPEC_PATHS and isinstance(obj, dict) else []
    metadata = obj.get("metadata") if isinstance(obj, dict) else None
    metadata = metadata if isinstance(metadata, dict) else {}
    namespace = (request.get("namespace") or metadata.get("namespace", "")) if isinstance(obj, dict) else ""
    name = (request.get("name") or metadata.get("name", "")) if isinstance(obj, dict) else ""
    return Review(
        request["uid"],
        str(kind or ""),
        str(namespace or ""),
        str(name or ""),
        tuple(images),
        bool(request.get("dryRun")),
    )


def _pod_images(kind: str, obj: dict[str, Any]) -> list[ImageUse]:
    """The images of the pod spec of `obj` (a workload of `kind`): its containers', then its image volumes'."""
    spec: Any = obj
    for part in POD_SPEC_PATHS[kind]:
        spec = spec.get(part) if isinstance(spec, dict) else None
    if not isinstance(spec, dict):
        return []
    base = "/" + "/".join(POD_SPEC_PATHS[kind])
    return _container_images(spec, base) + _volume_images(spec, base)


def _container_images(spec: dict[str, Any], base: str) -> list[ImageUse]:
    images = []
    for listing in CONTAINER_LISTS:
        containers = spec.get(listing) or []
        if not isinstance(containers, list):
            raise MalformedError(f"{base}/{listing} must be a list")
        for i, c in enumerate(containers):
            if isinstance(c, dict) and isinstance(c.get("image"), str):
                images.append(ImageUse(f"{base}/{listing}/{i}/image", c["image"]))
    return images


def _volume_images(spec: dict[str, Any], base: str) -> list[ImageUse]:
    volumes = spec.get("volumes") or []
    if not isinstance(volumes, list):
        raise MalformedError(f"{base}/volumes must be a list")
    images = []
    for i, v in enumerate(volumes):
        source = v.get("image") if isinstance(v, dict) else None
        if source is None:
            continue
        if not isinstance(source, dict) or not isinstance(source.get("reference"), str):
            # an image volume whose image cannot be read is refused, never left unchecked
            raise MalformedError(f"{base}/volumes/{i}/image.reference must be a string")
        images.append(ImageUse(f"{base}/volumes/{i}/image/reference", source["reference"]))
    return images


def normalise(image: str) -> Reference:
    """A pod's image string as a full reference (Docker Hub shorthand expanded)."""
    first, _, rest = image.partition("/")
    if not rest or ("." not in first and ":" not in first and first != "localhost"):
        path = image if rest else f"library/{image}"
        image = f"docker.io/{path}"
    return Reference.parse(image)


def response(
    uid: str,
    allowed: bool,
    message: str = "",
    warnings: list[str] | None = None,
    patch: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {"uid": uid, "allowed": allowed}
    if not allowed:
        out["status"] = {"code": 403, "message": message[:4000]}
    elif message:
        out["status"] = {"code": 200, "message": message[:4000]}
    if warnings:
        out["warnings"] = [w[:500] for w in warnings[:20]]
    if patch:
        out["patchType"] = "JSONPatch"
        out["patch"] = base64.b64encode(json.dumps(patch).encode()).decode()
    return {"apiVersion": ADMISSION_API, "kind": "AdmissionReview", "response": out}


def parse_provider_request(body: bytes) -> list[str]:
    doc = jsonin.load(body, "ProviderRequest", MAX_REVIEW_BYTES)
    if not isinstance(doc, dict) or doc.get("kind") != "ProviderRequest":
        raise MalformedError(f"expected a {GATEKEEPER_API} ProviderRequest")
    keys = (doc.get("request") or {}).get("keys") if isinstance(doc.get("request"), dict) else None
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys) or len(keys) > 256:
        raise MalformedError("ProviderRequest.request.keys must be a list of at most 256 image strings")
    return keys


def provider_response(items: list[dict[str, Any]], system_error: str = "") -> dict[str, Any]:
    return {
        "apiVersion": GATEKEEPER_API,
        "kind": "ProviderResponse",
        "response": {"idempotent": True, "items": items, "systemError": system_error},
    }
