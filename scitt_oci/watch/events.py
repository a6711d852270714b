"""Registry webhook payloads, normalised to `RegistryEvent` (repository, digest, tag, action).

Pure: bytes and headers in, events or `MalformedError` out. A host or URL inside a payload is never
returned: the registry an event is about is the configured one the webhook route belongs to.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from scitt_oci import jsonin
from scitt_oci.errors import MalformedError
from scitt_oci.oci.manifest import DOCKER_LIST, OCI_INDEX, STATEMENT_ARTIFACT, is_fallback_tag
from scitt_oci.oci.reference import Digest, valid_repository, valid_tag

MAX_PAYLOAD_BYTES = 1024 * 1024


class Action(StrEnum):
    """What a registry event says happened to a manifest (deploy: from admission, never from a webhook)."""

    PUSH = "push"
    DELETE = "delete"
    DEPLOY = "deploy"


PUSH, DELETE, DEPLOY = Action.PUSH, Action.DELETE, Action.DEPLOY


@dataclass(frozen=True)
class RegistryEvent:
    repository: str
    digest: str | None  # None: a tag-only event (resolved against the registry before use)
    tag: str | None
    action: Action
    media_type: str | None = None
    deployment: tuple[tuple[str, str], ...] = ()  # for deploy: cluster, namespace, workload
    # The sender's id of this event (Distribution's event id, a CloudEvents id, GitHub's delivery id):
    # a redelivery carries the same one, a new push of the same digest (say, after its deletion) another.
    delivery: str | None = field(default=None, compare=False)

    def key(self) -> str:
        """What the event says (the inbox tells repeated events from redeliveries with it, the delivery
        id and what happened to the manifest in between)."""
        where = "|".join(v for _k, v in self.deployment)
        return f"{self.action}|{self.repository}|{self.digest or ''}|{self.tag or ''}" + (f"|{where}" if where else "")

    def to_json(self) -> dict[str, Any]:
        return {
            "repository": self.repository,
            "digest": self.digest,
            "tag": self.tag,
            "action": self.action,
            "media_type": self.media_type,
            "deployment": dict(self.deployment),
            "delivery": self.delivery,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> RegistryEvent:
        deployment = tuple(sorted((doc.get("deployment") or {}).items()))
        return cls(
            doc["repository"],
            doc.get("digest"),
            doc.get("tag"),
            Action(doc["action"]),
            doc.get("media_type"),
            deployment,
            doc.get("delivery"),
        )


def _json(body: bytes) -> Any:
    return jsonin.load(body, "payload", MAX_PAYLOAD_BYTES)


def _obj(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise MalformedError(f"{where} must be a JSON object")
    return value


def _text(value: Any, where: str, *, required: bool = True) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value or len(value) > 512:
        raise MalformedError(f"{where} must be a non-empty string")
    return value


def _digest(value: Any, where: str, *, required: bool = True) -> str | None:
    text = _text(value, where, required=required)
    if text is None:
        return None
    Digest.parse(text)
    return text


def _tag(value: Any, where: str) -> str | None:
    """An optional tag, held to the OCI reference grammar: a tag is also a path segment of registry URLs
    and is printed by the CLI, so `../`, `?`, `#` or control characters never pass."""
    text = _text(value, where, required=False)
    if text is not None and not valid_tag(text):
        raise MalformedError(f"{where} {text[:100]!a} is not a tag ([A-Za-z0-9_][A-Za-z0-9._-]{{0,127}})")
    return text


def _repository(value: Any, where: str) -> str:
    text = _text(value, where)
    assert text is not None
    if not valid_repository(text):
        raise MalformedError(f"{where} {text[:100]!r} is not a repository name")
    return text


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def _delivery(*candidates: Any) -> str | None:
    """The first usable delivery id: a string or an integer (a timestamp), at most 200 printable characters."""
    for value in candidates:
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            continue
        text = str(value)
        if text and len(text) <= 200 and not _CONTROL.search(text):
            return text
    return None


def _event_id(value: Any, where: str) -> str | None:
    """The optional `id` of our own generic payload: held to what `_delivery` keeps, or refused (an id
    dropped silently would make a redelivery a new event)."""
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, (str, int))
        or (isinstance(value, int) and abs(value) >= 10**200)
    ):
        raise MalformedError(f"{where} must be a string or an integer of at most 200 characters")
    text = str(value)
    if not text or len(text) > 200 or _CONTROL.search(text):
        raise MalformedError(f"{where} must be 1 to 200 characters, none of them a control character")
    return text


# ----------------------------------------------------------------------------- CNCF Distribution, GitLab, ACR
def _distribution_event(e: dict[str, Any], where: str) -> RegistryEvent | None:
    action = e.get("action")
    if action not in (PUSH, DELETE):
        return None  # pull, mount: nothing to record
    target = _obj(e.get("target"), f"{where}.target")
    media_type = target.get("mediaType") if isinstance(target.get("mediaType"), str) else None
    if media_type == "application/octet-stream" or "/blobs/" in str(target.get("url", "")):
        return None  # a blob, not a manifest
    repository = _repository(target.get("repository"), f"{where}.target.repository")
    digest = _digest(target.get("digest"), f"{where}.target.digest", required=False)
    tag = _tag(target.get("tag"), f"{where}.target.tag")
    if _ours(target, tag, media_type):
        return None
    if digest is None and (action == DELETE or tag is None):
        return None  # a tag deletion (Distribution sends one beside the manifest's): the manifest event suffices
    return RegistryEvent(
        repository, digest, tag, Action(action), media_type, delivery=_delivery(e.get("id"), e.get("timestamp"))
    )


def _ours(target: dict[str, Any], tag: str | None, media_type: str | None) -> bool:
    """Events for what the watcher itself pushed, recognisable from the payload alone: a statement
    artifact (its layer's media type is listed in `references`) or a referrers fallback index. Dropping
    them here saves storing and fetching them; the worker would skip them anyway."""
    if is_fallback_tag(tag) and media_type in (OCI_INDEX, DOCKER_LIST):
        return True
    references = target.get("references")
    return isinstance(references, list) and any(
        isinstance(r, dict) and r.get("mediaType") == STATEMENT_ARTIFACT for r in references
    )


def parse_distribution(body: bytes, headers: Mapping[str, str]) -> list[RegistryEvent]:
    """CNCF Distribution notifications (and GitLab self-managed): `{"events": [...]}`."""
    doc = _obj(_json(body), "payload")
    events = doc.get("events")
    if not isinstance(events, list):
        raise MalformedError('payload must be an envelope {"events": [...]}')
    out = []
    for i, e in enumerate(events):
        parsed = _distribution_event(_obj(e, f"events[{i}]"), f"events[{i}]")
        if parsed:
            out.append(parsed)
    return out


def parse_acr(body: bytes, headers: Mapping[str, str]) -> list[RegistryEvent]:
    """Azure Container Registry: one Distribution-shaped event per POST, or an Event Grid wrapper."""
    doc = _json(body)
    items = doc if isinstance(doc, list) else [doc]
    out = []
    for i, item in enumerate(items):
        item = _obj(item, f"event[{i}]")
        if "data" in item and "target" not in item:  # Event Grid / CloudEvents: the same object under data
            kind = str(item.get("eventType") or item.get("type") or "")
            wrapper_id = _delivery(item.get("id"))
            item = dict(_obj(item["data"], f"event[{i}].data"))
            item.setdefault("action", DELETE if kind.endswith("Deleted") else PUSH)
            if wrapper_id and _delivery(item.get("id")) is None:
                item["id"] = wrapper_id
        parsed = _distribution_event(item, f"event[{i}]")
        if parsed:
            out.append(parsed)
    return out


# ----------------------------------------------------------------------------- Harbor
_HARBOR_ACTIONS = {
    "PUSH_ARTIFACT": PUSH,
    "DELETE_ARTIFACT": DELETE,
    "harbor.artifact.pushed": PUSH,
    "harbor.artifact.deleted": DELETE,
}


def parse_harbor(body: bytes, headers: Mapping[str, str]) -> list[RegistryEvent]:
    """Harbor, default format (`type` + `event_data`) or CloudEvents (`type` + `data`)."""
    doc = _obj(_json(body), "payload")
    kind = doc.get("type") or headers.get("ce-type")
    action = _HARBOR_ACTIONS.get(str(kind))
    if action is None:
        return []  # scans, quota, replication, pulls
    data = _obj(doc.get("event_data", doc.get("data", doc)), "event_data")
    repo = _obj(data.get("repository"), "event_data.repository")
    repository = _repository(repo.get("repo_full_name"), "event_data.repository.repo_full_name")
    resources = data.get("resources")
    if not isinstance(resources, list):
        raise MalformedError("event_data.resources must be a list")
    delivery = _delivery(headers.get("ce-id"), doc.get("id"), doc.get("occur_at"), doc.get("time"))
    out = []
    for i, r in enumerate(resources):
        r = _obj(r, f"resources[{i}]")
        out.append(
            RegistryEvent(
                repository,
                _digest(r.get("digest"), f"resources[{i}].digest"),
                _tag(r.get("tag"), f"resources[{i}].tag"),
                action,
                delivery=delivery,
            )
        )
    return out


# ----------------------------------------------------------------------------- GitHub
def parse_github(body: bytes, headers: Mapping[str, str]) -> list[RegistryEvent]:
    """GitHub `package` events (container packages published or updated)."""
    if headers.get("x-github-event", "package") not in ("package", "registry_package"):
        return []
    doc = _obj(_json(body), "payload")
    if doc.get("action") not in ("published", "updated"):
        return []
    package = _obj(doc.get("package") or doc.get("registry_package"), "package")
    if str(package.get("package_type", "")).lower() != "container":
        return []
    version = _obj(package.get("package_version"), "package.package_version")
    owner = _obj(package.get("owner") or {}, "package.owner").get("login")
    name = _text(package.get("name"), "package.name")
    assert name is not None
    repository = _repository(f"{owner}/{name}".lower() if owner else name.lower(), "package.name")
    digest = _digest(version.get("version") or version.get("name"), "package.package_version.version")
    metadata = version.get("container_metadata") or {}
    tag = None
    if isinstance(metadata, dict) and isinstance(metadata.get("tag"), dict):
        tag = _tag(metadata["tag"].get("name"), "container_metadata.tag.name")
    return [RegistryEvent(repository, digest, tag, PUSH, delivery=_delivery(headers.get("x-github-delivery")))]


# ----------------------------------------------------------------------------- zot
def parse_zot(body: bytes, headers: Mapping[str, str]) -> list[RegistryEvent]:
    """zot's events extension: CloudEvents in binary mode (ce-* headers, JSON data) or structured mode."""
    doc = _obj(_json(body), "payload")
    kind = headers.get("ce-type") or doc.get("type")
    data = doc if "ce-type" in headers else _obj(doc.get("data"), "data")
    action = {"zotregistry.image.updated": PUSH, "zotregistry.image.deleted": DELETE}.get(str(kind))
    if action is None:
        return []
    reference = _text(data.get("reference"), "data.reference", required=False)
    tag = _tag(reference, "data.reference") if reference and not reference.startswith("sha256:") else None
    media_type = data.get("mediaType") if isinstance(data.get("mediaType"), str) else None
    return [
        RegistryEvent(
            _repository(data.get("name"), "data.name"),
            _digest(data.get("digest"), "data.digest"),
            tag,
            action,
            media_type,
            delivery=_delivery(headers.get("ce-id"), doc.get("id")),
        )
    ]


# ----------------------------------------------------------------------------- generic
def parse_generic(body: bytes, headers: Mapping[str, str]) -> list[RegistryEvent]:
    """`{"repository": "...", "digest": "sha256:...", "tag"?: "...", "action"?: "push"|"delete", "id"?: "..."}`
    or a list of them (`id`: the sender's event id, telling a redelivery from a new event)."""
    doc = _json(body)
    items = doc if isinstance(doc, list) else [doc]
    out = []
    for i, item in enumerate(items):
        item = _obj(item, f"event[{i}]")
        unknown = set(item) - {"repository", "digest", "tag", "action", "id"}
        if unknown:
            raise MalformedError(f"event[{i}]: unknown keys {sorted(unknown)}")
        action = item.get("action", PUSH)
        if action not in (PUSH, DELETE):
            raise MalformedError(f"event[{i}].action must be push or delete")
        out.append(
            RegistryEvent(
                _repository(item.get("repository"), f"event[{i}].repository"),
                _digest(item.get("digest"), f"event[{i}].digest"),
                _tag(item.get("tag"), f"event[{i}].tag"),
                Action(action),
                delivery=_event_id(item.get("id"), f"event[{i}].id"),
            )
        )
    return out


PARSERS: dict[str, Callable[[bytes, Mapping[str, str]], list[RegistryEvent]]] = {
    "distribution": parse_distribution,
    "acr": parse_acr,
    "harbor": parse_harbor,
    "github": parse_github,
    "zot": parse_zot,
    "generic": parse_generic,
}
