"""Webhook payloads of every supported registry, normalised; hosts and URLs inside them are ignored."""

from __future__ import annotations

import json

import pytest

from scitt_oci.errors import MalformedError
from scitt_oci.watch import events
from scitt_oci.watch.events import RegistryEvent

D = "sha256:5d8ae6143394fc080642b6caef7c25047c159df2874f0a71adef5c480be0d2f0"


def test_distribution_push_delete_and_noise() -> None:
    body = {"events": [
        {"action": "push", "target": {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": D,
                                      "repository": "demo/app", "url": "http://evil.example/v2/x", "tag": "v1"},
         "request": {"host": "evil.example"}},
        {"action": "push", "target": {"mediaType": "application/octet-stream", "digest": D, "repository": "demo/app"}},
        {"action": "pull", "target": {"digest": D, "repository": "demo/app"}},
        {"action": "delete", "target": {"digest": D, "repository": "demo/app"}},
        {"action": "delete", "target": {"repository": "demo/app", "tag": "to-delete"}},
    ]}
    got = events.parse_distribution(json.dumps(body).encode(), {})
    assert got == [RegistryEvent("demo/app", D, "v1", "push", "application/vnd.oci.image.manifest.v1+json"),
                   RegistryEvent("demo/app", D, None, "delete", None)]
    assert "evil" not in repr(got)


def test_acr_plain_and_event_grid() -> None:
    plain = {"id": "x", "action": "push", "target": {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                                                      "digest": D, "repository": "hello", "tag": "v1"}}
    assert events.parse_acr(json.dumps(plain).encode(), {})[0].tag == "v1"
    grid = [{"eventType": "Microsoft.ContainerRegistry.ImageDeleted", "data": {"target": {"digest": D, "repository": "hello"}}}]
    assert events.parse_acr(json.dumps(grid).encode(), {})[0].action == "delete"


def test_harbor_default_and_cloudevents() -> None:
    default = {"type": "PUSH_ARTIFACT", "occur_at": 1, "operator": "admin", "event_data": {
        "resources": [{"digest": D, "tag": "latest", "resource_url": "evil.example/p/debian:latest"}],
        "repository": {"name": "debian", "namespace": "p", "repo_full_name": "p/debian"}}}
    assert events.parse_harbor(json.dumps(default).encode(), {}) == [RegistryEvent("p/debian", D, "latest", "push")]
    ce = {"type": "harbor.artifact.deleted", "data": default["event_data"]}
    assert events.parse_harbor(json.dumps(ce).encode(), {})[0].action == "delete"
    assert events.parse_harbor(json.dumps({"type": "SCANNING_COMPLETED"}).encode(), {}) == []


def test_github_package_event() -> None:
    body = {"action": "published", "package": {"name": "Net-Monitor", "package_type": "CONTAINER", "owner": {"login": "wabbit"},
            "package_version": {"version": D, "container_metadata": {"tag": {"name": "v2", "digest": D}}}}}
    assert events.parse_github(json.dumps(body).encode(), {"x-github-event": "package"}) == [
        RegistryEvent("wabbit/net-monitor", D, "v2", "push")]
    assert events.parse_github(b"{}", {"x-github-event": "push"}) == []


def test_zot_binary_and_structured_cloudevents() -> None:
    data = {"name": "app", "reference": "v1", "digest": D, "mediaType": "application/vnd.oci.image.manifest.v1+json"}
    assert events.parse_zot(json.dumps(data).encode(), {"ce-type": "zotregistry.image.updated"})[0].tag == "v1"
    structured = {"type": "zotregistry.image.deleted", "data": {**data, "reference": D}}
    got = events.parse_zot(json.dumps(structured).encode(), {})[0]
    assert got.action == "delete" and got.tag is None


def test_generic_and_its_strictness() -> None:
    assert events.parse_generic(json.dumps({"repository": "a/b", "digest": D}).encode(), {}) == [RegistryEvent("a/b", D, None, "push")]
    with pytest.raises(MalformedError, match="unknown keys \\['host'\\]"):
        events.parse_generic(json.dumps({"repository": "a/b", "digest": D, "host": "evil.example"}).encode(), {})
    with pytest.raises(MalformedError, match="must be sha256"):
        events.parse_generic(json.dumps({"repository": "a/b", "digest": "md5:00"}).encode(), {})
    with pytest.raises(MalformedError, match="not a repository name"):
        events.parse_generic(json.dumps({"repository": "../etc", "digest": D}).encode(), {})


@pytest.mark.parametrize("kind", sorted(events.PARSERS))
def test_garbage_is_a_malformed_error(kind: str) -> None:
    for body in (b"", b"[", b"null", b"42", b'"x"', b"\xff\xfe"):
        try:
            events.PARSERS[kind](body, {})
        except MalformedError:
            pass


def test_our_own_pushes_are_dropped_from_distribution_payloads() -> None:
    ours = {"events": [
        {"action": "push", "target": {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": D, "repository": "a",
                                      "references": [{"mediaType": "application/scitt-statement+cose", "digest": D, "size": 1}]}},
        {"action": "push", "target": {"mediaType": "application/vnd.oci.image.index.v1+json", "digest": D, "repository": "a",
                                      "tag": "sha256-" + "ab" * 32}},
    ]}
    assert events.parse_distribution(json.dumps(ours).encode(), {}) == []
