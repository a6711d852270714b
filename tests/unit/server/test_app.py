"""The ASGI app in process (Starlette's TestClient over create_app and a real service on SQLite):
registration, entries, keys, issuers, checkpoints, consistency, auth, limits, operations and errors."""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import cbor2
import httpx
import pytest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from scitt_oci.cose import keys
from scitt_oci.errors import ScittOciError
from scitt_oci.log.store import entry_id
from scitt_oci.scitt import receipt, statement
from scitt_oci.server.app import ISSUERS_PATH, Issuer, Metrics, RateLimiter, Settings, create_app
from scitt_oci.server.problems import PROBLEM_TYPE
from tests.unit.server.support import ISSUER, ISSUER_KEY, TS_KEY, client, make_service, running, statement_bytes

COSE = {"Content-Type": "application/cose"}


def _problem(r: httpx.Response, status: int) -> tuple[str, str]:
    """The (title, detail) of a concise problem details answer with `status`."""
    assert r.status_code == status, r.content
    assert r.headers["content-type"] == PROBLEM_TYPE
    body = cbor2.loads(r.content)
    assert body[-4] == status
    return body[-1], body[-2]


def _eid(data: bytes) -> bytes:
    return entry_id(statement.parse(data).entry())


@pytest.fixture
def http(tmp_path: Path) -> Iterator[httpx.Client]:
    with running(make_service(tmp_path)) as service, client(service) as c:
        yield c


# ----- registration -----
def test_register_answers_201_with_a_receipt_then_the_entry_serves_it(http: httpx.Client) -> None:
    data = statement_bytes(1)
    r = http.post("/entries", content=data, headers=COSE)
    assert r.status_code == 201 and r.headers["content-type"] == "application/cose"
    assert r.headers["location"] == f"/entries/{_eid(data).hex()}"
    assert receipt.verify_receipt(r.content, statement.parse(data), [TS_KEY]).leaf_index == 0
    again = http.post("/entries", content=data, headers={"Content-Type": "application/cose; charset=binary"})
    assert again.status_code == 201 and again.content == r.content  # known: the same receipt, no new leaf
    got = http.get(r.headers["location"])
    assert got.status_code == 200 and got.content == r.content and got.headers["location"] == r.headers["location"]


def test_register_answers_202_while_integrating_and_the_entry_then_202(tmp_path: Path) -> None:
    with running(make_service(tmp_path, max_delay=30)) as service, client(service, Settings(wait_seconds=0.05)) as c:
        r = c.post("/entries", content=statement_bytes(2), headers=COSE)
        assert r.status_code == 202 and r.content == b""
        assert r.headers["location"] == f"/entries/{_eid(statement_bytes(2)).hex()}" and r.headers["retry-after"] == "1"
        pending = c.get(r.headers["location"])
        assert pending.status_code == 202 and pending.headers["retry-after"] == "1"


def test_a_log_that_cannot_store_answers_503_then_429_when_its_queue_is_full(tmp_path: Path) -> None:
    service = make_service(tmp_path, accept_timeout=0.05, max_queue=1)  # the sequencer never runs
    try:
        with client(service) as c:
            answer = c.post("/entries", content=statement_bytes(3), headers=COSE)
            title, detail = _problem(answer, 503)
            assert title == "Service Unavailable" and "durable within 0.05 s; retry later" in detail
            assert answer.headers["retry-after"] == "5"
            r = c.post("/entries", content=statement_bytes(4), headers=COSE)
            title, detail = _problem(r, 429)
            assert "the log is busy" in detail and r.headers["retry-after"] == "1"
            metrics = c.get("/metrics").text
            assert 'scitt_registrations_total{outcome="503"} 1.0' in metrics
            assert 'scitt_registrations_total{outcome="429"} 1.0' in metrics
            assert "scitt_registrations_waiting 1.0" in metrics
    finally:
        service.store.close()


@pytest.mark.parametrize(
    ("body", "title", "detail"),
    [
        (statement_bytes(5, slot=22), "Rejected", "not trusted by this log"),
        (b"\x9f" * 5000, "Malformed", ""),  # indefinite arrays nested far deeper than any statement
        (b"\xbb" + b"\xff" * 8, "Malformed", ""),  # a map declaring 2**64-1 pairs
        (b"", "Malformed", ""),
    ],
)
def test_bad_statements_get_a_precise_4xx(http: httpx.Client, body: bytes, title: str, detail: str) -> None:
    r = http.post("/entries", content=body, headers=COSE)
    assert 400 <= r.status_code < 500
    got_title, got_detail = _problem(r, r.status_code)
    assert got_title.startswith(title) and detail in got_detail


def test_media_type_and_size_limits(tmp_path: Path) -> None:
    with running(make_service(tmp_path)) as service, client(service, Settings(max_body=100)) as c:
        title, detail = _problem(c.post("/entries", content=b"x"), 415)
        assert "not no content type" in detail
        title, detail = _problem(c.post("/entries", content=b"x", headers={"Content-Type": "application/json"}), 415)
        assert "not application/json" in detail
        title, detail = _problem(c.post("/entries", content=b"x" * 101, headers=COSE), 413)
        assert (title, detail) == ("Payload Too Large", "the body may be at most 100 bytes")

        def chunks() -> Iterator[bytes]:  # no Content-Length: the streamed size is counted
            yield b"x" * 60
            yield b"x" * 60

        _problem(c.post("/entries", content=chunks(), headers=COSE), 413)
        assert service.store.size() == 0


def test_registration_needs_the_bearer_token_when_configured(tmp_path: Path) -> None:
    settings = Settings(tokens=("s3cret-token",), auth_required=True)
    with running(make_service(tmp_path)) as service, client(service, settings) as c:
        for headers in (
            {},
            {"Authorization": "Basic s3cret-token"},
            {"Authorization": "Bearer wrong"},
            {"Authorization": "Bearer "},
        ):
            r = c.post("/entries", content=statement_bytes(6), headers={**COSE, **headers})
            assert _problem(r, 401)[0] == "Unauthorized"
            assert r.headers["www-authenticate"] == 'Bearer realm="scitt-oci"'
        r = c.post("/entries", content=statement_bytes(6), headers={**COSE, "Authorization": "bearer s3cret-token"})
        assert r.status_code == 201
    with running(make_service(tmp_path / "b")) as service, client(service, Settings(auth_required=True)) as c:
        # Required, and no token configured: nothing is accepted.
        r = c.post("/entries", content=statement_bytes(6), headers={**COSE, "Authorization": "Bearer anything"})
        _problem(r, 401)


def test_clients_over_their_rate_get_429_with_retry_after(tmp_path: Path) -> None:
    settings = Settings(rate_limiter=RateLimiter(per_second=0.01, burst=2))
    with running(make_service(tmp_path)) as service, client(service, settings) as c:
        assert c.post("/entries", content=statement_bytes(7), headers=COSE).status_code == 201
        assert c.get(f"/entries/{_eid(statement_bytes(7)).hex()}").status_code == 200
        r = c.get(f"/entries/{_eid(statement_bytes(7)).hex()}")
        assert _problem(r, 429)[0] == "Too Many Requests" and int(r.headers["retry-after"]) >= 1
        _problem(c.post("/entries", content=statement_bytes(8), headers=COSE), 429)
        assert service.store.size() == 1


def test_rate_limiter_refills_and_forgets_when_it_holds_too_many_clients() -> None:
    limiter = RateLimiter(per_second=1000, burst=1)
    assert limiter.allow("a") == 0.0
    assert limiter.allow("a") > 0  # the bucket is empty for a moment
    assert RateLimiter(0, 1).allow("anyone") == 0.0  # 0 per second: no limit
    many = RateLimiter(per_second=1, burst=5)
    for i in range(100_001):
        many.allow(str(i))
    assert len(many._buckets) == 0  # cleared rather than grown without bound


# ----- entries -----
@pytest.mark.parametrize("text", ["zz" * 32, "ab" * 31, "ab" * 33, "x"])
def test_malformed_entry_ids_get_400(http: httpx.Client, text: str) -> None:
    title, detail = _problem(http.get(f"/entries/{text}"), 400)
    assert title == "Malformed request" and "64 hexadecimal characters" in detail


def test_unknown_entries_get_404(http: httpx.Client) -> None:
    title, detail = _problem(http.get(f"/entries/{'00' * 32}"), 404)
    assert title == "Not Found" and detail == f"receipt with entry id {'00' * 32} is not known to this service"


# ----- keys and issuers -----
def test_key_set_and_single_keys(http: httpx.Client) -> None:
    r = http.get("/.well-known/scitt-keys")
    assert r.status_code == 200 and r.headers["content-type"] == "application/cbor"
    assert [keys.from_cose(k).kid for k in cbor2.loads(r.content)] == [TS_KEY.kid]
    assert http.get("/.well-known/scitt-keys", headers={"Accept": "application/*"}).status_code == 200
    assert (
        _problem(http.get("/.well-known/scitt-keys", headers={"Accept": "application/json"}), 406)[0]
        == "Not Acceptable"
    )
    b64 = base64.urlsafe_b64encode(TS_KEY.kid).rstrip(b"=").decode()
    assert keys.from_cose(cbor2.loads(http.get(f"/.well-known/scitt-keys/{b64}").content)).kid == TS_KEY.kid
    assert _problem(http.get("/.well-known/scitt-keys/not-a-kid!"), 404)[0] == "No such key"


def test_issuers_are_published_as_json(tmp_path: Path) -> None:
    issuer = Issuer(ISSUER, (ISSUER_KEY,))
    with running(make_service(tmp_path)) as service, client(service, issuers=[issuer]) as c:
        r = c.get(ISSUERS_PATH, headers={"Accept": "application/json, text/plain"})
        assert r.status_code == 200 and r.headers["content-type"] == "application/json"
        [entry] = r.json()["issuers"]
        assert entry["iss"] == ISSUER and "d" not in entry["keys"][0]
        assert keys.from_jwk(entry["keys"][0]).kid == ISSUER_KEY.kid
        _problem(c.get(ISSUERS_PATH, headers={"Accept": "application/cbor"}), 406)


# ----- checkpoints and consistency -----
def test_checkpoint_and_consistency_routes(http: httpx.Client) -> None:
    title, detail = _problem(http.get("/checkpoint"), 404)
    assert title == "Not Found" and "the log is empty" in detail
    assert http.post("/entries", content=statement_bytes(10), headers=COSE).status_code == 201
    first = http.get("/checkpoint")
    assert first.status_code == 200 and first.headers["cache-control"] == "no-store"
    size1, root1, _ = receipt.read_checkpoint(first.content, [TS_KEY])
    for n in (11, 12):
        assert http.post("/entries", content=statement_bytes(n), headers=COSE).status_code == 201
    size, root, _ = receipt.read_checkpoint(http.get("/checkpoint").content, [TS_KEY])
    r = http.get("/consistency", params={"from": size1})
    assert r.status_code == 200 and r.headers["content-type"] == "application/cose"
    assert receipt.verify_consistency_receipt(r.content, old_size=size1, old_root=root1, keys=[TS_KEY])[:2] == (
        size,
        root,
    )
    r = http.get("/consistency", params={"from": size1, "to": 2})
    assert receipt.verify_consistency_receipt(r.content, old_size=size1, old_root=root1, keys=[TS_KEY])[0] == 2
    assert "no signed tree head of size 7" in _problem(http.get("/consistency?from=1&to=7"), 404)[1]
    assert "from size 0" in _problem(http.get("/consistency?from=0"), 404)[1]


@pytest.mark.parametrize(
    "query",
    [
        "",
        "?to=3",
        "?from=x",
        "?from=%D9%A1",
        "?from=+1",
        "?from=1&to=-2",
        f"?from=1&to={2**63}",
        "?from=1&to=" + "9" * 20,
    ],
)
def test_malformed_consistency_queries_get_400(http: httpx.Client, query: str) -> None:
    title, detail = _problem(http.get(f"/consistency{query}"), 400)
    assert title == "Malformed request" and "decimal integers from 0 to 9223372036854775807" in detail


# ----- operations -----
def test_metrics_health_and_readiness(tmp_path: Path) -> None:
    metrics = Metrics()
    service = make_service(tmp_path, metrics=metrics)
    not_ready: list[str | None] = [None]
    scraped: list[int] = []
    with client(service, metrics=metrics, readiness=lambda: not_ready[0], scrape=lambda: scraped.append(1)) as c:
        assert c.get("/healthz").text == "ok\n"
        assert _problem(c.get("/readyz"), 503)[1] == "the sequencer is not running"
        service.start()
        try:
            assert c.get("/readyz").text == "ready\n"
            not_ready[0] = "the registry watcher has stopped"
            assert _problem(c.get("/readyz"), 503)[1] == "the registry watcher has stopped"
            assert c.post("/entries", content=statement_bytes(20), headers=COSE).status_code == 201
            text = c.get("/metrics").text
        finally:
            service.stop()
        assert "scitt_tree_size 1.0" in text and 'scitt_registrations_total{outcome="201"} 1.0' in text
        assert "scitt_batch_entries_count 1.0" in text and "scitt_registration_seconds_count 1.0" in text
        assert scraped == [1]
    service.store.close()


def test_readiness_fails_when_the_store_cannot_be_read(tmp_path: Path) -> None:
    service = make_service(tmp_path)
    service.store.close()
    for name in ("log.db", "log.db-wal", "log.db-shm"):
        (tmp_path / name).unlink(missing_ok=True)
    (tmp_path / "log.db").write_bytes(b"this is not a database file" * 100)
    with client(service) as c:
        assert _problem(c.get("/readyz"), 503)[1] == "the log store is not readable: DatabaseError"


def test_metrics_of_several_workers_are_read_from_their_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path / "none-written"))
    (tmp_path / "none-written").mkdir()
    service = make_service(tmp_path)
    try:
        with client(service) as c:
            r = c.get("/metrics")
            # The combined registry reads only the workers' files (none here), not this process's registry.
            assert r.status_code == 200 and "scitt_tree_size" not in r.text
    finally:
        service.store.close()


# ----- framework answers -----
def _failing(exc: Exception) -> Route:
    async def fail(request: Request) -> Response:
        raise exc

    return Route("/fail", fail)


def test_unknown_paths_methods_and_failures_are_problem_details(tmp_path: Path) -> None:
    calls: list[str] = []
    hooks = (lambda: calls.append("start"), lambda: calls.append("stop"))
    service = make_service(tmp_path)
    try:
        with client(service, extra_routes=[_failing(ScittOciError("the store lost its heads"))], hooks=hooks) as c:
            assert calls == ["start"]
            assert _problem(c.get("/nope"), 404) == ("Not Found", "GET /nope: Not Found")
            assert _problem(c.post("/checkpoint"), 405) == (
                "Method Not Allowed",
                "POST /checkpoint: Method Not Allowed",
            )
            assert _problem(c.get("/fail"), 500) == ("Internal Server Error", "the store lost its heads")
        assert calls == ["start", "stop"]
        with client(service, extra_routes=[_failing(RuntimeError("secret internals"))]) as c:
            assert _problem(c.get("/fail"), 500)[1] == "the service failed to answer; see its log"
    finally:
        service.store.close()


def test_a_client_that_hangs_up_mid_body_is_one_debug_line_not_an_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A client gone after 2 of the 400 bytes it declared: no error logged, no exception out of the app
    (uvicorn would log a second traceback), and the service still answers the next request."""
    service = make_service(tmp_path)
    app = create_app(service, Settings())
    path = "/entries"
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"localhost"), (b"content-type", b"application/cose"), (b"content-length", b"400")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8700),
    }
    first: dict[str, Any] = {"type": "http.request", "body": b"\xd2\x84", "more_body": True}
    messages = iter([first])
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> MutableMapping[str, Any]:
        return next(messages, {"type": "http.disconnect"})

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    with caplog.at_level(logging.DEBUG, logger="scitt_oci"):
        asyncio.run(app(scope, receive, send))
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("went away" in r.getMessage() for r in caplog.records)
    with running(service), client(service) as http:
        assert http.get("/.well-known/scitt-keys").status_code == 200


def test_the_hand_made_201_has_the_headers_a_response_object_would_write() -> None:
    from starlette.responses import Response

    from scitt_oci.log.service import Registered
    from scitt_oci.server import scrapi

    registered = Registered(bytes(range(32)), b"\xd2\x84receipt")
    made = Response(
        registered.receipt,
        status_code=201,
        media_type=scrapi.COSE,
        headers={"Location": scrapi.entry_path(registered.entry_id)},
    )
    assert sorted(scrapi._created_headers(registered)) == sorted(made.raw_headers)
