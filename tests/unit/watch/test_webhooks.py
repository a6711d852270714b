"""The webhook routes in process (Starlette's TestClient): the secret as a bearer token or a GitHub body
signature, size and media type limits, which registry, payload errors as problem JSON, 202 once stored."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient

from scitt_oci.server.webhooks import webhook_routes
from scitt_oci.watch.events import MAX_PAYLOAD_BYTES, PUSH, RegistryEvent
from scitt_oci.watch.inbox import Inbox

SECRET = "s3cret"
D = "sha256:5d8ae6143394fc080642b6caef7c25047c159df2874f0a71adef5c480be0d2f0"
PUSHED = {
    "events": [
        {
            "id": "evt-1",
            "action": "push",
            "target": {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": D, "repository": "app"},
        }
    ]
}
PUSHED_TYPE = "application/vnd.oci.image.manifest.v1+json"
BEARER = {"Authorization": f"Bearer {SECRET}", "Content-Type": "application/json"}


@pytest.fixture
def inbox(tmp_path: Path) -> Iterator[Inbox]:
    inbox = Inbox(tmp_path / "watch.db")
    yield inbox
    inbox.close()


def _client(inbox: Inbox, registries: list[str]) -> TestClient:
    return TestClient(Starlette(routes=webhook_routes(inbox, registries, SECRET)))


def _problem(r: httpx.Response, status: int, detail: str) -> None:
    assert r.status_code == status and r.headers["content-type"] == "application/problem+json", r.text
    assert detail in r.json()["detail"], r.json()


def test_a_bearer_secret_stores_the_events_once(inbox: Inbox) -> None:
    with _client(inbox, ["reg.test"]) as http:
        body = json.dumps(PUSHED)
        r = http.post("/webhooks/distribution", content=body, headers=BEARER)
        assert r.status_code == 202 and r.json() == {"received": 1, "queued": 1}
        again = http.post("/webhooks/distribution", content=body, headers=BEARER)  # a redelivery
        assert again.status_code == 202 and again.json() == {"received": 1, "queued": 0}
    [item] = inbox.claim(5)
    assert (item.registry, item.event) == ("reg.test", RegistryEvent("app", D, None, PUSH, PUSHED_TYPE))


def test_a_github_body_signature_is_checked(inbox: Inbox) -> None:
    body = json.dumps(
        {
            "action": "published",
            "package": {
                "name": "app",
                "package_type": "CONTAINER",
                "owner": {"login": "acme"},
                "package_version": {"version": D, "container_metadata": {"tag": {"name": "v1", "digest": D}}},
            },
        }
    ).encode()
    good = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    headers = {"X-GitHub-Event": "package", "Content-Type": "application/json"}
    with _client(inbox, ["ghcr.io"]) as http:
        r = http.post("/webhooks/github", content=body, headers={**headers, "X-Hub-Signature-256": good})
        assert r.status_code == 202 and r.json() == {"received": 1, "queued": 1}
        bad = "sha256=" + "0" * 64
        r = http.post("/webhooks/github", content=body, headers={**headers, "X-Hub-Signature-256": bad})
        _problem(r, 401, "the webhook secret is missing or wrong")
    assert inbox.counts() == {"pending": 1}


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {SECRET}"},
        {"Authorization": "Bearer "},
        {"X-Hub-Signature-256": "sha1=abc"},
    ],
)
def test_requests_without_the_secret_are_refused_before_the_body_is_read(inbox: Inbox, headers: dict[str, str]) -> None:
    with _client(inbox, ["reg.test"]) as http:
        _problem(http.post("/webhooks/distribution", content=b"{}", headers=headers), 401, "missing or wrong")
    assert inbox.counts() == {}


@pytest.mark.parametrize("kind", ["distribution", "generic"])
def test_an_id_that_is_not_unicode_text_is_refused_and_nothing_is_stored(inbox: Inbox, kind: str) -> None:
    """A lone surrogate escape ("\\ud800") decodes to a string the inbox cannot store: a 400 naming it."""
    event = {**PUSHED["events"][0], "id": "\ud800"} if kind == "distribution" else {"id": "\ud800"}
    payload = {"events": [event]} if kind == "distribution" else {**event, "repository": "app", "digest": D}
    body = json.dumps(payload)  # ensure_ascii: the surrogate as the escape a sender would write
    assert '"\\ud800"' in body
    with _client(inbox, ["reg.test"]) as http:
        r = http.post(f"/webhooks/{kind}", content=body, headers=BEARER)
        _problem(r, 400, f"not a {kind} payload: payload holds a lone UTF-16 surrogate (\\ud800)")
    assert inbox.counts() == {}


def test_limits_formats_and_registries(inbox: Inbox) -> None:
    body = json.dumps(PUSHED)
    with _client(inbox, ["a.test", "b.test"]) as http:
        _problem(http.post("/webhooks/quay", content=body, headers=BEARER), 404, "no webhook format 'quay'")
        big = b" " * (MAX_PAYLOAD_BYTES + 1)
        _problem(http.post("/webhooks/distribution", content=big, headers=BEARER), 413, f"at most {MAX_PAYLOAD_BYTES}")
        xml = {**BEARER, "Content-Type": "application/xml"}
        _problem(http.post("/webhooks/distribution", content=body, headers=xml), 415, "not application/xml")
        _problem(http.post("/webhooks/distribution", content=body, headers=BEARER), 400, "add ?registry= one of")
        r = http.post("/webhooks/distribution?registry=c.test", content=body, headers=BEARER)
        _problem(r, 400, "registry 'c.test' is not one this service watches")
        r = http.post("/webhooks/distribution?registry=b.test", content=b"[1", headers=BEARER)
        _problem(r, 400, "not a distribution payload:")
        assert inbox.counts() == {}
        r = http.post(
            "/webhooks/distribution?registry=b.test", content=body, headers={"Authorization": f"Bearer {SECRET}"}
        )
        assert r.status_code == 202 and r.json() == {"received": 1, "queued": 1}
        r = http.post("/webhooks/distribution?registry=b.test", content=b'{"events": []}', headers=BEARER)
        assert r.status_code == 202 and r.json() == {"received": 0, "queued": 0}
    [item] = inbox.claim(5)
    assert item.registry == "b.test"


def test_while_the_inbox_database_is_out_of_reach_webhooks_answer_503_and_nothing_is_lost(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Nothing stored, so no 2xx: a 503 with Retry-After (the registry delivers again), one log line
    naming the outage and no traceback; the redelivery once the database is back is stored."""
    import uuid

    from scitt_oci.watch.inbox import PostgresInbox
    from tests.unit.log.test_postgres_store import DSN, _cut, dropped

    schema = "t_" + uuid.uuid4().hex[:12]
    with dropped(schema):
        inbox = PostgresInbox(f"{DSN} application_name={schema}", schema=schema)
        try:
            working = inbox._dsn
            inbox._dsn = "host=127.0.0.1 port=1 user=watcher password=hunter2 connect_timeout=2"
            _cut(schema)
            with _client(inbox, ["reg.test"]) as http, caplog.at_level("WARNING", logger="scitt_oci.server"):
                r = http.post("/webhooks/distribution", content=json.dumps(PUSHED), headers=BEARER)
                _problem(r, 503, "the PostgreSQL inbox is out of reach")
                assert r.headers["retry-after"] == "5" and "hunter2" not in r.text
                [record] = caplog.records
                assert "out of reach" in record.getMessage() and record.exc_info is None
                inbox._dsn = working
                r = http.post("/webhooks/distribution", content=json.dumps(PUSHED), headers=BEARER)
                assert r.status_code == 202 and r.json() == {"received": 1, "queued": 1}
        finally:
            inbox.close()


def test_a_webhook_whose_inbox_stalls_answers_503_at_the_deadline_and_the_redelivery_is_one_event(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The database holds the connection and answers nothing: the sender gets a 503 at the write
    deadline instead of waiting as long as the stall lasts; the write may land once the database
    answers again, and the sender's redelivery is then recognised as the same event."""
    import uuid

    import psycopg

    from scitt_oci.server import offloop
    from scitt_oci.watch.inbox import PostgresInbox
    from tests.stallproxy import stall_proxy
    from tests.unit.log.test_postgres_store import DSN, dropped

    monkeypatch.setattr(offloop, "DEADLINE", 1.0)
    schema = "t_" + uuid.uuid4().hex[:12]
    port = int(psycopg.conninfo.conninfo_to_dict(DSN).get("port") or 5432)
    with dropped(schema), stall_proxy(port) as proxy:
        inbox = PostgresInbox(
            psycopg.conninfo.make_conninfo(DSN, host="127.0.0.1", port=str(proxy.port)), schema=schema
        )
        try:
            with _client(inbox, ["reg.test"]) as http:
                proxy.stall()
                r = http.post("/webhooks/distribution", content=json.dumps(PUSHED), headers=BEARER)
                _problem(r, 503, "the inbox did not answer within 1 s")
                proxy.flow()
                again = http.post("/webhooks/distribution", content=json.dumps(PUSHED), headers=BEARER)
                assert again.status_code == 202 and again.json()["received"] == 1
            assert inbox.counts() == {"pending": 1}
        finally:
            inbox.close()
