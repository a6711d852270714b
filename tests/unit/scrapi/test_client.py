"""The SCRAPI client in process, against a loopback server thread that answers as scripted: registration
(-11's 202 and -10's 303), polling, retries with the transport's Backoff, the call's total deadline,
size limits, problem details, origins, and errors without an answer."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from typing import TypedDict, Unpack

import cbor2
import pytest

from scitt_oci import netutil, transport
from scitt_oci.cose import keys
from scitt_oci.cose.keys import CoseKey
from scitt_oci.scrapi.client import COSE, ClientError, ScrapiClient
from tests.helpers import key
from tests.loopproxy import LoopProxy
from tests.unit.scrapi.scripted import Reply, Scripted

PROBLEM = "application/concise-problem-details+cbor"


@pytest.fixture
def service() -> Iterator[Scripted]:
    server = Scripted()
    yield server
    server.close()


def _public(k: CoseKey) -> CoseKey:
    return CoseKey(k.public, k.kid, k.alg)


class _Options(TypedDict, total=False):
    token: str
    timeout: float
    max_attempts: int
    max_response_bytes: int


def _client(service: Scripted, **kw: Unpack[_Options]) -> tuple[ScrapiClient, list[float]]:
    slept: list[float] = []
    return ScrapiClient(service.url, sleep=slept.append, **kw), slept


def test_reads_keys_checkpoint_consistency_and_receipts(service: Scripted) -> None:
    key_set = keys.dump_cose_key_set([_public(key())])
    for reply in (
        Reply(200, key_set, {"Content-Type": "application/cbor"}),
        Reply(200, b"checkpoint", {"Content-Type": COSE}),
        Reply(200, b"proof", {"Content-Type": COSE}),
        Reply(200, b"receipt", {"Content-Type": COSE}),
        Reply(202, b"", {"Location": "/entries/e2"}),
        Reply(404, b""),
    ):
        service.replies.put(reply)
    client, slept = _client(service, token="s3cret")
    assert [k.kid for k in client.keys()] == [key().kid]  # noqa: SIM118 - the service keys, not a dict
    assert client.checkpoint() == b"checkpoint"
    assert client.consistency(3, 5) == b"proof"
    assert client.receipt("e1") == b"receipt"
    assert client.receipt("e2") is None and client.receipt("e3") is None  # pending, unknown
    seen = service.requests()
    assert [f"{s.method} {s.path}" for s in seen] == [
        "GET /.well-known/scitt-keys",
        "GET /checkpoint",
        "GET /consistency?from=3&to=5",
        "GET /entries/e1",
        "GET /entries/e2",
        "GET /entries/e3",
    ]
    assert all(s.headers["authorization"] == "Bearer s3cret" and s.headers["user-agent"] == "scitt-oci" for s in seen)
    assert seen[0].headers["accept"] == "application/cbor" and seen[1].headers["accept"] == COSE
    assert slept == []


def test_answers_that_are_not_what_was_asked_are_named_errors(service: Scripted) -> None:
    problem = cbor2.dumps({-1: "Bad Request", -2: "no such size"})
    for reply in (
        Reply(200, b"\xa1\x01", {"Content-Type": "application/cbor"}),  # not a key set
        Reply(400, problem, {"Content-Type": PROBLEM}),
        Reply(404, b""),
        Reply(400, b"\xff", {"Content-Type": PROBLEM}),  # problem details that do not decode
        Reply(500, b""),
    ):
        service.replies.put(reply)
    client, _ = _client(service, max_attempts=1)
    with pytest.raises(ClientError, match="not a COSE Key Set"):
        client.keys()
    with pytest.raises(ClientError, match="consistency proof from 9 to 3: HTTP 400 Bad Request: no such size") as info:
        client.consistency(9, 3)
    assert (info.value.status, info.value.title) == (400, "Bad Request")
    with pytest.raises(ClientError, match="fetching the checkpoint: HTTP 404$") as info:
        client.checkpoint()
    assert info.value.title is None
    with pytest.raises(ClientError, match="HTTP 400$"):
        client.checkpoint()
    with pytest.raises(ClientError, match="fetching the receipt of e1: HTTP 500"):
        client.receipt("e1")


def test_issuers_are_read_and_checked(service: Scripted) -> None:
    jwk = _public(key()).to_jwk()
    good = {"issuers": [{"iss": "https://wabbit.example", "keys": [jwk]}]}
    docs: tuple[object, ...] = (
        good,
        {"issuers": {}},
        {"issuers": [{"iss": "", "keys": [jwk]}]},
        {"issuers": [{"iss": "x", "keys": []}]},
    )
    for doc in docs:
        service.replies.put(Reply(200, json.dumps(doc).encode(), {"Content-Type": "application/json"}))
    service.replies.put(Reply(404, b""))
    client, _ = _client(service)
    [published] = client.issuers()
    assert published.iss == "https://wabbit.example" and [k.kid for k in published.keys] == [key().kid]
    for why in (
        'no "issuers" list',
        r"issuers\[0\] needs a non-empty text iss",
        r"issuers\[0\] needs a non-empty keys",
    ):
        with pytest.raises(ClientError, match=why):
            client.issuers()
    with pytest.raises(ClientError, match="fetching the published issuers: HTTP 404") as info:
        client.issuers()
    assert info.value.status == 404
    assert service.requests()[0].headers["accept"] == "application/json"


def test_register_returns_at_once_or_polls_the_location(service: Scripted) -> None:
    for reply in (
        Reply(201, b"receipt-1", {"Location": "/entries/a"}),
        # draft -11: 202 + Location, then 202 while pending, then the receipt
        Reply(202, b"", {"Location": "/entries/b", "Retry-After": "2"}),
        Reply(202, b"", {"Retry-After": "0"}),
        Reply(200, b"receipt-2"),
        # draft -10: 303 to the entry, 302 while pending
        Reply(303, b"", {"Location": f"{service.url}/entries/c"}),
        Reply(302, b"", {"Retry-After": "99"}),
        Reply(200, b"receipt-3"),
    ):
        service.replies.put(reply)
    client, slept = _client(service)
    first = client.register(b"statement")
    assert (first.receipt, first.location) == (b"receipt-1", "/entries/a")
    assert client.register(b"statement").receipt == b"receipt-2"
    assert client.register(b"statement").receipt == b"receipt-3"
    assert slept == [2.0, 1.0, 10.0]  # Retry-After honoured (capped at 10 s), 1 s when it is absent
    seen = service.requests()
    assert [f"{s.method} {s.path}" for s in seen] == [
        "POST /entries",
        "POST /entries",
        "GET /entries/b",
        "GET /entries/b",
        "POST /entries",
        "GET /entries/c",
        "GET /entries/c",
    ]
    assert seen[0].body == b"statement" and seen[0].headers["content-type"] == COSE


def test_register_refuses_what_it_cannot_follow(service: Scripted) -> None:
    problem = cbor2.dumps({-1: "Unsupported Media Type"})
    for reply in (
        Reply(202, b""),
        Reply(303, b"", {"Location": "http://elsewhere.example/entries/x"}),
        Reply(415, problem, {"Content-Type": PROBLEM}),
        Reply(202, b"", {"Location": "/entries/d"}),
        Reply(400, b""),
    ):
        service.replies.put(reply)
    client, _ = _client(service)
    with pytest.raises(ClientError, match="answered 202 without a Location"):
        client.register(b"s")
    with pytest.raises(ClientError, match="outside its own origin; not followed"):
        client.register(b"s")
    with pytest.raises(ClientError, match="registration: HTTP 415 Unsupported Media Type"):
        client.register(b"s")
    with pytest.raises(ClientError, match="waiting for the receipt at /entries/d: HTTP 400"):
        client.register(b"s")
    with pytest.raises(ClientError, match="must be http"):
        ScrapiClient("ftp://127.0.0.1/")


def test_waiting_for_a_receipt_ends_at_max_wait(service: Scripted) -> None:
    for _ in range(5):
        service.replies.put(Reply(202, b"", {"Retry-After": "5"}))
    client = ScrapiClient(service.url, max_wait=1.0)
    started = time.monotonic()
    with pytest.raises(ClientError, match="no receipt at /entries/x after 1 s") as info:
        client.wait_for("/entries/x")
    assert time.monotonic() - started < 3
    assert info.value.cause == "timeout"
    assert len(service.requests()) == 1  # one poll, then a wait of what was left: no poll past the deadline


def test_transient_failures_are_retried_with_the_transport_backoff(service: Scripted) -> None:
    for reply in (Reply(503, b""), Reply(429, b"", {"Retry-After": "2"}), Reply(200, b"cp")):
        service.replies.put(reply)
    client, slept = _client(service, max_attempts=3)
    assert client.checkpoint() == b"cp"
    assert len(slept) == 2 and 0 <= slept[0] <= 0.2 and slept[1] == 2.0  # jittered first wait, then Retry-After
    # The attempts are bounded: the last answer is the one reported.
    for _ in range(2):
        service.replies.put(Reply(503, b""))
    client, slept = _client(service, max_attempts=2)
    with pytest.raises(ClientError, match="HTTP 503"):
        client.checkpoint()
    assert len(slept) == 1 and len(service.requests()) == 5


def test_no_retry_whose_wait_would_end_past_the_deadline(service: Scripted) -> None:
    service.replies.put(Reply(503, b"", {"Retry-After": "5"}))
    client, slept = _client(service, timeout=1.0, max_attempts=5)
    with pytest.raises(ClientError, match="HTTP 503"):
        client.checkpoint()
    assert slept == [] and len(service.requests()) == 1


def test_a_slow_service_is_not_asked_again_after_the_deadline(service: Scripted) -> None:
    """The known gap: an attempt cut off at the timeout used to be retried, up to max_attempts times."""
    hold = threading.Event()
    service.holds.append(hold)
    for _ in range(5):
        service.replies.put(Reply(200, b"late", hold=hold))
    client = ScrapiClient(service.url, timeout=0.5, max_attempts=5)
    started = time.monotonic()
    with pytest.raises(ClientError, match="no answer in time") as info:
        client.checkpoint()
    elapsed = time.monotonic() - started
    assert info.value.cause == "timeout"
    assert len(service.requests()) == 1, "a request was retried after the call's deadline"
    assert elapsed < 2.0, elapsed


def test_a_registration_stops_polling_a_slow_service_at_max_wait(service: Scripted) -> None:
    hold = threading.Event()
    service.holds.append(hold)
    service.replies.put(Reply(202, b"", {"Location": "/entries/z", "Retry-After": "0"}))
    for _ in range(5):
        service.replies.put(Reply(200, b"late", hold=hold))
    client = ScrapiClient(service.url, timeout=10.0, max_wait=1.0, max_attempts=5)
    started = time.monotonic()
    with pytest.raises(ClientError, match="no answer in time"):
        client.register(b"s")
    assert time.monotonic() - started < 3.0
    assert [s.method for s in service.requests()] == ["POST", "GET"]  # the GET was cut off at max_wait, not retried


def test_answers_larger_than_the_limit_are_refused(service: Scripted) -> None:
    service.replies.put(Reply(200, b"x" * 200))
    service.replies.put(Reply(200, chunks=[b"y" * 64] * 4))
    client, _ = _client(service, max_response_bytes=100)
    with pytest.raises(ClientError, match="the answer is 200 bytes; at most 100 are read"):
        client.checkpoint()
    with pytest.raises(ClientError, match="the answer is more than 100 bytes"):
        client.checkpoint()


def test_no_answer_at_all_is_named_by_its_cause() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens once it is closed
    slept: list[float] = []
    client = ScrapiClient(f"http://127.0.0.1:{port}", max_attempts=2, sleep=slept.append)
    with pytest.raises(ClientError, match=r"cannot connect to http://127.0.0.1:\d+ \(Connection refused\)") as info:
        client.keys()
    assert info.value.cause == "connect" and len(slept) == 1  # retried once, with a backoff wait


def test_tls_to_a_plain_http_service_is_named_and_not_retried(service: Scripted) -> None:
    slept: list[float] = []
    client = ScrapiClient(service.url.replace("http://", "https://"), sleep=slept.append, verify_tls=False)
    with pytest.raises(ClientError, match="does not speak TLS") as info:
        client.keys()
    assert info.value.cause == "tls-plain" and slept == []


# ----- a bearer token never crosses the network in clear -----


@pytest.mark.parametrize(
    ("url", "proxy", "refused"),
    [
        ("https://ts.example", None, None),
        ("https://ts.example", "http://proxy.example:3128", None),  # TLS runs inside the CONNECT tunnel
        ("http://127.0.0.1:8080", None, None),
        ("http://127.0.0.2:8080", None, None),  # all of 127.0.0.0/8 is loopback
        ("http://[::1]:8080", None, None),
        ("http://localhost:8080", None, None),
        ("http://ts.example:8080", None, "clear to http://ts.example:8080: use https://ts.example:8080"),
        ("http://10.0.0.5", None, "clear to http://10.0.0.5: use https://10.0.0.5"),
        ("http://127.0.0.1.nip.io", None, "clear to http://127.0.0.1.nip.io"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:3128", "through the proxy for http://127.0.0.1:8080"),
    ],
)
def test_the_clear_text_rule(url: str, proxy: str | None, refused: str | None) -> None:
    why = netutil.clear_text_refusal(url, proxy, "the bearer token")
    assert why == refused if refused is None else (why is not None and refused in why)


def test_a_token_beyond_loopback_over_plain_http_is_refused_before_any_request() -> None:
    with pytest.raises(ClientError, match=r"transparency service http://ts\.example:8080: .* use https://ts\.example"):
        ScrapiClient("http://ts.example:8080", token="s3cret-0123456789abcdef")
    assert ScrapiClient("http://ts.example:8080").base == "http://ts.example:8080/"  # without a token: allowed


def test_a_token_straight_to_another_loopback_address_is_sent() -> None:
    service = Scripted(Reply(200, b"checkpoint"), host="127.0.0.2")
    try:
        assert ScrapiClient(service.url, token="s3cret-0123456789abcdef").checkpoint() == b"checkpoint"
        [seen] = service.requests()
        assert seen.headers["authorization"] == "Bearer s3cret-0123456789abcdef"
    finally:
        service.close()


def test_a_token_is_never_handed_to_a_plain_http_proxy(service: Scripted) -> None:
    """Through HTTP_PROXY a request goes in absolute form, headers and all, to the proxy in clear: even
    to a loopback service, a client with a token and a proxy in between is refused before it sends."""
    for _ in range(2):
        service.replies.put(Reply(200, b"checkpoint"))
    with LoopProxy() as proxy:
        env = {"HTTP_PROXY": proxy.url}
        named = service.url.replace("127.0.0.1", "ts.proxied.test")  # reachable only through the proxy
        for url, session in (
            (named, transport.Session(environ=env)),
            (service.url, transport.Session(environ=env, proxy_loopback=True)),
        ):
            with pytest.raises(ClientError, match="would go in clear through the proxy|would cross the network"):
                ScrapiClient(url, token="s3cret-0123456789abcdef", session=session)
        assert sum(proxy.seen["forwarded"].values()) == 0 and service.requests() == []
        # The same route without a token does go through the proxy: the refusal above was not for want of one.
        assert ScrapiClient(named, session=transport.Session(environ=env)).checkpoint() == b"checkpoint"
        assert proxy.seen["forwarded"]["ts.proxied.test"] == 1
        [seen] = service.requests()
        assert "authorization" not in seen.headers
