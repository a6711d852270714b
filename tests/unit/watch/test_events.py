"""Webhook payloads of every supported registry, normalised; hosts and URLs inside them are ignored."""

from __future__ import annotations

import json

import pytest

from scitt_oci.errors import MalformedError
from scitt_oci.watch import events
from scitt_oci.watch.events import DELETE, PUSH, RegistryEvent

D = "sha256:5d8ae6143394fc080642b6caef7c25047c159df2874f0a71adef5c480be0d2f0"


def test_distribution_push_delete_and_noise() -> None:
    body = {
        "events": [
            {
                "action": "push",
                "target": {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": D,
                    "repository": "demo/app",
                    "url": "http://evil.example/v2/x",
                    "tag": "v1",
                },
                "request": {"host": "evil.example"},
            },
            {
                "action": "push",
                "target": {"mediaType": "application/octet-stream", "digest": D, "repository": "demo/app"},
            },
            {"action": "pull", "target": {"digest": D, "repository": "demo/app"}},
            {"action": "delete", "target": {"digest": D, "repository": "demo/app"}},
            {"action": "delete", "target": {"repository": "demo/app", "tag": "to-delete"}},
        ]
    }
    got = events.parse_distribution(json.dumps(body).encode(), {})
    assert got == [
        RegistryEvent("demo/app", D, "v1", PUSH, "application/vnd.oci.image.manifest.v1+json"),
        RegistryEvent("demo/app", D, None, DELETE, None),
    ]
    assert "evil" not in repr(got)


def test_acr_plain_and_event_grid() -> None:
    plain = {
        "id": "x",
        "action": "push",
        "target": {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": D,
            "repository": "hello",
            "tag": "v1",
        },
    }
    assert events.parse_acr(json.dumps(plain).encode(), {})[0].tag == "v1"
    grid = [
        {
            "eventType": "Microsoft.ContainerRegistry.ImageDeleted",
            "data": {"target": {"digest": D, "repository": "hello"}},
        }
    ]
    assert events.parse_acr(json.dumps(grid).encode(), {})[0].action == "delete"


def test_harbor_default_and_cloudevents() -> None:
    default = {
        "type": "PUSH_ARTIFACT",
        "occur_at": 1,
        "operator": "admin",
        "event_data": {
            "resources": [{"digest": D, "tag": "latest", "resource_url": "evil.example/p/debian:latest"}],
            "repository": {"name": "debian", "namespace": "p", "repo_full_name": "p/debian"},
        },
    }
    assert events.parse_harbor(json.dumps(default).encode(), {}) == [RegistryEvent("p/debian", D, "latest", PUSH)]
    ce = {"type": "harbor.artifact.deleted", "data": default["event_data"]}
    assert events.parse_harbor(json.dumps(ce).encode(), {})[0].action == "delete"
    assert events.parse_harbor(json.dumps({"type": "SCANNING_COMPLETED"}).encode(), {}) == []


def test_github_package_event() -> None:
    body = {
        "action": "published",
        "package": {
            "name": "Net-Monitor",
            "package_type": "CONTAINER",
            "owner": {"login": "wabbit"},
            "package_version": {"version": D, "container_metadata": {"tag": {"name": "v2", "digest": D}}},
        },
    }
    assert events.parse_github(json.dumps(body).encode(), {"x-github-event": "package"}) == [
        RegistryEvent("wabbit/net-monitor", D, "v2", PUSH)
    ]
    assert events.parse_github(b"{}", {"x-github-event": "push"}) == []


def test_zot_binary_and_structured_cloudevents() -> None:
    data = {"name": "app", "reference": "v1", "digest": D, "mediaType": "application/vnd.oci.image.manifest.v1+json"}
    assert events.parse_zot(json.dumps(data).encode(), {"ce-type": "zotregistry.image.updated"})[0].tag == "v1"
    structured = {"type": "zotregistry.image.deleted", "data": {**data, "reference": D}}
    got = events.parse_zot(json.dumps(structured).encode(), {})[0]
    assert got.action == "delete" and got.tag is None


def test_generic_and_its_strictness() -> None:
    assert events.parse_generic(json.dumps({"repository": "a/b", "digest": D}).encode(), {}) == [
        RegistryEvent("a/b", D, None, PUSH)
    ]
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
    ours = {
        "events": [
            {
                "action": "push",
                "target": {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": D,
                    "repository": "a",
                    "references": [{"mediaType": "application/scitt-statement+cose", "digest": D, "size": 1}],
                },
            },
            {
                "action": "push",
                "target": {
                    "mediaType": "application/vnd.oci.image.index.v1+json",
                    "digest": D,
                    "repository": "a",
                    "tag": "sha256-" + "ab" * 32,
                },
            },
        ]
    }
    assert events.parse_distribution(json.dumps(ours).encode(), {}) == []


@pytest.mark.parametrize("tag", ["../../../../_catalog?n=1#", "v1\r\nX-Injected: 1", "v1\n", "-lead", "a" * 129, "t#x"])
def test_tags_outside_the_reference_grammar_are_refused_naming_the_field(tag: str) -> None:
    body = {
        "events": [
            {
                "action": "push",
                "target": {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": D,
                    "repository": "demo/app",
                    "tag": tag,
                },
            }
        ]
    }
    with pytest.raises(MalformedError, match=r"events\[0\]\.target\.tag .* is not a tag") as caught:
        events.parse_distribution(json.dumps(body).encode(), {})
    assert "\r" not in str(caught.value) and "\n" not in str(caught.value)
    generic = {"repository": "demo/app", "digest": D, "tag": tag}
    with pytest.raises(MalformedError, match=r"event\[0\]\.tag"):
        events.parse_generic(json.dumps(generic).encode(), {})
    zot = {"name": "app", "reference": tag, "digest": D}
    with pytest.raises(MalformedError, match=r"data\.reference"):
        events.parse_zot(json.dumps(zot).encode(), {"ce-type": "zotregistry.image.updated"})


def test_redeliveries_are_one_event_and_a_new_push_of_the_same_digest_is_another() -> None:
    def push(event_id: str) -> RegistryEvent:
        body = {
            "events": [
                {
                    "id": event_id,
                    "timestamp": "2026-11-30T10:00:00Z",
                    "action": "push",
                    "target": {
                        "mediaType": "application/vnd.oci.image.manifest.v1+json",
                        "digest": D,
                        "repository": "demo/app",
                        "tag": "v1",
                    },
                }
            ]
        }
        return events.parse_distribution(json.dumps(body).encode(), {})[0]

    first, redelivered, again = push("7f0b3c1e"), push("7f0b3c1e"), push("a1d2e3f4")
    assert first.delivery == redelivered.delivery == "7f0b3c1e" and again.delivery == "a1d2e3f4"
    assert first.key() == again.key()  # the same news; the inbox tells them apart by delivery and history
    assert RegistryEvent.from_json(first.to_json()).delivery == first.delivery
    github = {
        "action": "published",
        "package": {"name": "app", "package_type": "container", "package_version": {"version": D}},
    }
    one = events.parse_github(json.dumps(github).encode(), {"x-github-delivery": "d-1"})[0]
    two = events.parse_github(json.dumps(github).encode(), {"x-github-delivery": "d-2"})[0]
    assert (one.delivery, two.delivery) == ("d-1", "d-2")
    ids = [
        events.parse_generic(json.dumps({"repository": "demo/app", "digest": D, "id": i}).encode(), {})[0].delivery
        for i in ("1", "2")
    ]
    assert ids == ["1", "2"]
    # Our own payload's id is held to what is kept as an id, or the payload is refused: an id dropped
    # silently would turn a redelivery into a new event.
    for bad in ('"x\\r\\ny"', '""', f'"{"9" * 201}"', "1e400", "1.5", "true", '{"a": 1}', '["1"]', "1" + "0" * 200):
        body = f'{{"repository": "demo/app", "digest": "{D}", "id": {bad}}}'.encode()
        with pytest.raises(MalformedError, match=r"event\[0\]\.id must be"):
            events.parse_generic(body, {})
    assert (
        events.parse_generic(json.dumps({"repository": "demo/app", "digest": D, "id": 7}).encode(), {})[0].delivery
        == "7"
    )


def test_each_form_names_what_is_wrong_or_ignores_what_is_not_an_image_event() -> None:
    def raw(doc: object) -> bytes:
        return json.dumps(doc).encode()

    with pytest.raises(MalformedError, match=r'envelope \{"events": \[...\]\}'):
        events.parse_distribution(raw({"action": "push"}), {})
    with pytest.raises(MalformedError, match="must be a non-empty string"):
        events.parse_generic(raw({"repository": "a/b", "digest": D, "id": 1, "tag": ""}), {})
    with pytest.raises(MalformedError, match="event_data.resources must be a list"):
        events.parse_harbor(raw({"type": "PUSH_ARTIFACT", "event_data": {"repository": {"repo_full_name": "p/a"}}}), {})
    with pytest.raises(MalformedError, match=r"event\[0\].action must be push or delete"):
        events.parse_generic(raw({"repository": "a/b", "digest": D, "action": "pull"}), {})
    package = {"name": "app", "package_type": "npm", "package_version": {"version": D}}
    assert events.parse_github(raw({"action": "deleted", "package": package}), {"x-github-event": "package"}) == []
    assert events.parse_github(raw({"action": "published", "package": package}), {"x-github-event": "package"}) == []
    assert events.parse_zot(raw({"type": "zotregistry.repository.created", "data": {}}), {}) == []
    # An Event Grid wrapper's id is the delivery id of the event it carries.
    grid = [
        {
            "id": "grid-1",
            "eventType": "Microsoft.ContainerRegistry.ImagePushed",
            "data": {"target": {"digest": D, "repository": "hello", "tag": "v1"}},
        }
    ]
    [pushed] = events.parse_acr(raw(grid), {})
    assert (pushed.action, pushed.tag, pushed.delivery) == ("push", "v1", "grid-1")
