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


def _json_type(value: Any) -> str:
    """What a JSON value is, for a message naming a field that holds the wrong kind of value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "a list" if isinstance(value, list) else "an object"


def _wrong(field: str, want: str, value: Any, what: str = "an AdmissionReview") -> MalformedError:
    return MalformedError(f"not {what}: {field} must be {want}, not {_json_type(value)}")


def parse_review(body: bytes) -> Review:
    """The review in `body`. Anything a review must hold, or holds the wrong kind of value where an
    image is read, is a MalformedError naming the field (a 400): never an image left unread and admitted.
    `request.object` may be null only for a DELETE, which has no images to check."""
    doc = jsonin.load(body, "AdmissionReview", MAX_REVIEW_BYTES)
    if not isinstance(doc, dict) or doc.get("kind") != "AdmissionReview" or doc.get("apiVersion") != ADMISSION_API:
        raise MalformedError(f"expected an {ADMISSION_API} AdmissionReview")
    request = doc.get("request")
    if not isinstance(request, dict) or not isinstance(request.get("uid"), str):
        raise MalformedError("AdmissionReview.request with a uid is required")
    kinds = request.get("kind")
    if not isinstance(kinds, dict) or not isinstance(kinds.get("kind"), str):
        raise _wrong("request.kind.kind", "a string", kinds.get("kind") if isinstance(kinds, dict) else kinds)
    kind: str = kinds["kind"]
    obj = request.get("object")
    if obj is None and request.get("operation") == "DELETE":
        obj = {}
    if not isinstance(obj, dict):
        raise _wrong("request.object", "an object", obj)
    images = _pod_images(kind, obj) if kind in POD_SPEC_PATHS else []
    metadata = obj.get("metadata")
    metadata = metadata if isinstance(metadata, dict) else {}
    namespace = request.get("namespace") or metadata.get("namespace", "")
    name = request.get("name") or metadata.get("name", "")
    return Review(
        request["uid"], kind, str(namespace or ""), str(name or ""), tuple(images), bool(request.get("dryRun"))
    )


def _pod_images(kind: str, obj: dict[str, Any]) -> list[ImageUse]:
    """The images of the pod spec of `obj` (a workload of `kind`): its containers', then its image volumes'.
    Every object on the way to the pod spec must be one (a workload without a pod spec has no images
    only when it says nothing: a missing part is nothing, a part of the wrong type is refused)."""
    spec: Any = obj
    path = "request.object"
    for part in POD_SPEC_PATHS[kind]:
        spec = spec.get(part)
        path += f"/{part}"
        if spec is None:
            return []
        if not isinstance(spec, dict):
            raise _wrong(path, "an object", spec)
    base = "/" + "/".join(POD_SPEC_PATHS[kind])
    return _container_images(spec, base) + _volume_images(spec, base)


def _container_images(spec: dict[str, Any], base: str) -> list[ImageUse]:
    images = []
    for listing in CONTAINER_LISTS:
        containers = spec.get(listing) or []
        if not isinstance(containers, list):
            raise MalformedError(f"{base}/{listing} must be a list")
        for i, c in enumerate(containers):
            pointer = f"{base}/{listing}/{i}"
            if not isinstance(c, dict):
                raise _wrong(f"request.object{pointer}", "an object", c)
            if not isinstance(c.get("image"), str):
                raise _wrong(f"request.object{pointer}/image", "an image string", c.get("image"))
            images.append(ImageUse(f"{pointer}/image", c["image"]))
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
    if not isinstance(keys, list) or len(keys) > 256:
        raise MalformedError("ProviderRequest.request.keys must be a list of at most 256 image strings")
    for i, k in enumerate(keys):
        if not isinstance(k, str):
            raise _wrong(f"request.keys[{i}]", "an image string", k, "a ProviderRequest")
    return keys


def provider_response(items: list[dict[str, Any]], system_error: str = "") -> dict[str, Any]:
    return {
        "apiVersion": GATEKEEPER_API,
        "kind": "ProviderResponse",
        "response": {"idempotent": True, "items": items, "systemError": system_error},
    }
