"""SCRAPI over real HTTP against `scitt-oci serve` with real SQLite: every status and content type."""

from __future__ import annotations

import base64
import hashlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import cbor2
import pytest
import requests
import scitt_cose

from scitt_oci.cose import keys
from scitt_oci.scitt import receipt, statement
from scitt_oci.scitt.receipt import read_checkpoint
from scitt_oci.scrapi.client import ClientError, ScrapiClient
from tests.helpers import cbor_bomb
from tests.serverproc import ServerProcess

PROBLEM = "application/concise-problem-details+cbor"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    base = tmp_path_factory.mktemp("ts")
    srv = ServerProcess(base / "data", env={"SCITT_OCI_REGISTRATION__WAIT_SECONDS": "5"}).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def issuer(server: ServerProcess) -> keys.CoseKey:
    return keys.load_private_pem((server.data_dir / "keys" / "issuer.pem").read_bytes())


def _statement(issuer: keys.CoseKey, n: int) -> bytes:
    digest = hashlib.sha256(f"artifact {n}".encode()).digest()
    return statement.hash_envelope_statement(
        issuer, issuer="https://wabbit.example", subject=f"urn:test:{n}", digest=digest
    ).encode()


def _tree_size(server: ServerProcess) -> int:
    r = requests.get(server.url + "/checkpoint", timeout=5)
    if r.status_code == 404:
        return 0
    return read_checkpoint(r.content, ScrapiClient(server.url).keys())[0]


def _problem(r: requests.Response) -> dict[int, object]:
    assert r.headers["content-type"] == PROBLEM, r.headers
    body = cbor2.loads(r.content)
    assert isinstance(body, dict) and isinstance(body[-1], str) and isinstance(body[-2], str), body
    return body


def test_keys_endpoints(server: ServerProcess) -> None:
    r = requests.get(server.url + "/.well-known/scitt-keys", headers={"Accept": "application/cbor"}, timeout=5)
    assert r.status_code == 200 and r.headers["content-type"] == "application/cbor"
    [key] = keys.load_cose_key_set(r.content)
    kid64 = base64.urlsafe_b64encode(key.kid).rstrip(b"=").decode()
    one = requests.get(f"{server.url}/.well-known/scitt-keys/{kid64}", timeout=5)
    assert one.status_code == 200 and keys.from_cose(cbor2.loads(one.content)).kid == key.kid
    missing = requests.get(server.url + "/.well-known/scitt-keys/AAAA", timeout=5)
    assert missing.status_code == 404 and _problem(missing)[-1] == "No such key"
    assert (
        requests.get(server.url + "/.well-known/scitt-keys", headers={"Accept": "text/html"}, timeout=5).status_code
        == 406
    )


def test_register_201_then_get_200_and_scitt_cose_agrees(server: ServerProcess, issuer: keys.CoseKey) -> None:
    body = _statement(issuer, 1)
    r = requests.post(server.url + "/entries", data=body, headers={"Content-Type": "application/cose"}, timeout=10)
    assert r.status_code == 201 and r.headers["content-type"] == "application/cose"
    location = r.headers["location"]
    assert location.startswith("/entries/") and len(location) == len("/entries/") + 64
    again = requests.get(server.url + location, timeout=5)
    assert again.status_code == 200 and again.content == r.content
    # The same statement again: same entry, same receipt.
    dup = requests.post(server.url + "/entries", data=body, headers={"Content-Type": "application/cose"}, timeout=10)
    assert dup.status_code == 201 and dup.content == r.content and dup.headers["location"] == location
    # Independent check with scitt-cose, under our entry rule.
    ts_key = keys.load_cose_key_set(requests.get(server.url + "/.well-known/scitt-keys", timeout=5).content)[0]
    entry = statement.parse(body).entry()
    result = scitt_cose.verify_receipt(r.content, leaf_entry_hex=entry.hex(), log_public_key_pem=ts_key.public_pem())
    assert result.ok, result.errors
    assert receipt.verify_receipt(r.content, statement.parse(body), [ts_key]).entry_rule == "statement"


def test_unknown_and_malformed_entry_ids(server: ServerProcess) -> None:
    r = requests.get(server.url + "/entries/" + "00" * 32, timeout=5)
    assert r.status_code == 404 and _problem(r)[-1] == "Not Found"
    r = requests.get(server.url + "/entries/not-hex", timeout=5)
    assert r.status_code == 400 and _problem(r)[-1] == "Malformed request"


def test_checkpoint_and_consistency(server: ServerProcess, issuer: keys.CoseKey) -> None:
    client = ScrapiClient(server.url)
    service_keys = client.keys()
    client.register(_statement(issuer, 100))
    size1, root1, _ = read_checkpoint(client.checkpoint(), service_keys)
    for n in range(101, 105):
        client.register(_statement(issuer, n))
    size2, root2, _ = read_checkpoint(client.checkpoint(), service_keys)
    assert size2 >= size1 + 4
    proof = client.consistency(size1, size2)
    new_size, new_root, _v = receipt.verify_consistency_receipt(
        proof, old_size=size1, old_root=root1, keys=service_keys
    )
    assert (new_size, new_root) == (size2, root2)
    bad = requests.get(f"{server.url}/consistency?from=0&to={size2}", timeout=5)
    assert bad.status_code == 404 and _problem(bad)
    assert requests.get(f"{server.url}/consistency?from=x", timeout=5).status_code == 400


@pytest.mark.parametrize(
    ("headers", "body", "status", "title"),
    [
        ({"Content-Type": "text/plain"}, b"x", 415, "Unsupported Media Type"),
        ({}, b"x", 415, "Unsupported Media Type"),
        ({"Content-Type": "application/cose"}, b"\xd2\x84", 400, "Malformed request"),
        ({"Content-Type": "application/cose"}, b"\x81" * 40 + b"\x00", 400, "Malformed request"),
        (
            {"Content-Type": "application/cose"},
            cbor2.dumps(cbor2.CBORTag(18, ["x", {}, b"", b""])),
            400,
            "Malformed request",
        ),
        ({"Content-Type": "application/cose"}, b"\x00" * (64 * 1024 + 1), 413, "Payload Too Large"),
    ],
)
def test_bad_registrations_get_precise_problems_and_store_nothing(
    server: ServerProcess, headers: dict[str, str], body: bytes, status: int, title: str
) -> None:
    before = _tree_size(server)
    r = requests.post(server.url + "/entries", data=body, headers=headers, timeout=10)
    assert r.status_code == status, r.content
    assert _problem(r)[-1] == title
    after = _tree_size(server)
    assert after == before


def test_statement_rules_are_rejected_with_scrapi_titles(server: ServerProcess, issuer: keys.CoseKey) -> None:
    from scitt_oci.cose import sign1

    digest = hashlib.sha256(b"x").digest()
    assert issuer.alg is not None
    stranger = keys.generate(issuer.alg)
    cases = {
        "Rejected": sign1.sign(stranger, {4: stranger.kid, 15: {1: "https://x", 2: "s"}}, b"p").encode(),
        "Payload Missing": sign1.sign(
            issuer, {4: issuer.kid, 15: {1: "https://x", 2: "s"}}, None, detached_payload=b"p"
        ).encode(),
        "Malformed request": sign1.sign(
            issuer, {4: issuer.kid, 15: {1: "https://x", 2: "s"}, 258: -16, 3: "text/plain"}, digest
        ).encode(),
    }
    for title, body in cases.items():
        r = requests.post(server.url + "/entries", data=body, headers={"Content-Type": "application/cose"}, timeout=10)
        assert r.status_code == 400 and _problem(r)[-1] == title, (title, _problem(r))
    signed = sign1.sign(issuer, {4: issuer.kid, 15: {1: "https://x", 2: "s"}}, b"p")
    unsigned = sign1.Sign1(signed.protected_bytes, signed.protected, {}, b"p", b"").encode()
    wrong_alg = cbor2.dumps(
        cbor2.CBORTag(18, [cbor2.dumps({1: -999, 4: issuer.kid, 15: {1: "https://x", 2: "s"}}), {}, b"p", b"s" * 64])
    )
    for body, title in ((unsigned, "Rejected"), (wrong_alg, "Bad Signature Algorithm")):
        r = requests.post(server.url + "/entries", data=body, headers={"Content-Type": "application/cose"}, timeout=10)
        assert r.status_code == 400 and _problem(r)[-1] == title, (title, _problem(r))
    no_sub = sign1.sign(issuer, {4: issuer.kid, 15: {1: "https://x"}}, b"p").encode()
    r = requests.post(server.url + "/entries", data=no_sub, headers={"Content-Type": "application/cose"}, timeout=10)
    assert r.status_code == 400 and "sub (15/2)" in str(_problem(r)[-2])


def test_unknown_routes_and_methods_are_problems(server: ServerProcess) -> None:
    r = requests.get(server.url + "/nope", timeout=5)
    assert r.status_code == 404 and _problem(r)
    r = requests.delete(server.url + "/entries", timeout=5)
    assert r.status_code == 405 and _problem(r)
    # A trailing slash is another path, not a redirect to an address made of the client's Host header.
    r = requests.post(
        server.url + "/entries/", data=b"x", headers={"Host": "evil.example"}, allow_redirects=False, timeout=5
    )
    assert r.status_code == 404 and "location" not in r.headers and _problem(r)


def _exchange(server: ServerProcess, head: bytes, then: bytes = b"") -> tuple[bytes, bytes]:
    """Send `head`, read the answer until the server closes; then send `then` (if the connection takes it)
    and read what comes: (answer, what came after)."""
    with socket.create_connection((server.host, server.port), timeout=10) as conn:
        conn.sendall(head)
        answer = b""
        while chunk := conn.recv(65536):  # until the server closes; a kept-alive connection times out here
            answer += chunk
        try:
            conn.sendall(then)
            after = conn.recv(65536)
        except OSError:
            after = b""
    return answer, after


@pytest.mark.parametrize(
    ("path", "headers", "status"),
    [
        (b"/entries", b"Content-Type: application/cose\r\nContent-Length: 9999999\r\n", b"413"),
        (b"/entries", b"Content-Type: text/plain\r\nContent-Length: 5\r\n", b"415"),
        (b"/nope", b"Content-Type: application/cose\r\nContent-Length: 5\r\n", b"404"),  # any route's refusal
    ],
)
def test_a_post_refused_before_its_held_back_body_is_asked_for_closes_the_connection(
    server: ServerProcess, path: bytes, headers: bytes, status: bytes
) -> None:
    """A client waiting for 100 Continue that gets a refusal instead is told the connection closes: the
    server does not wait for that body, nor take the client's next request for it (RFC 9110 10.1.1)."""
    request = b"POST " + path + b" HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n" + headers + b"\r\n"
    answer, after = _exchange(server, request, b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
    head = answer.split(b"\r\n\r\n", 1)[0].lower()
    assert head.startswith(b"http/1.1 " + status) and b"\r\nconnection: close" in head, head
    assert after == b""


def test_health_ready_and_metrics(server: ServerProcess) -> None:
    assert requests.get(server.url + "/healthz", timeout=5).status_code == 200
    assert requests.get(server.url + "/readyz", timeout=5).status_code == 200
    text = requests.get(server.url + "/metrics", timeout=5).text
    for name in (
        "scitt_registrations_total",
        "scitt_batch_entries_bucket",
        "scitt_registration_seconds_bucket",
        "scitt_tree_size",
    ):
        assert name in text


def test_client_reports_refusals(server: ServerProcess) -> None:
    with pytest.raises(ClientError, match="HTTP 415|HTTP 400"):
        ScrapiClient(server.url).register(b"not cose")


def test_token_required_beyond_loopback(tmp_path: Path) -> None:
    srv = ServerProcess(tmp_path / "data", host="0.0.0.0").start()
    try:
        issuer = keys.load_private_pem((srv.data_dir / "keys" / "issuer.pem").read_bytes())
        token = (srv.data_dir / "registration-token").read_text().strip()
        assert oct((srv.data_dir / "registration-token").stat().st_mode & 0o777) == "0o600"
        body = _statement(issuer, 7)
        r = requests.post(srv.url + "/entries", data=body, headers={"Content-Type": "application/cose"}, timeout=10)
        assert (
            r.status_code == 401
            and _problem(r)[-1] == "Unauthorized"
            and r.headers["www-authenticate"].startswith("Bearer")
        )
        r = requests.post(
            srv.url + "/entries",
            data=body,
            headers={"Content-Type": "application/cose", "Authorization": "Bearer wrong-token-xxxxxxxx"},
            timeout=10,
        )
        assert r.status_code == 401
        assert ScrapiClient(srv.url, token=token).register(body).receipt
        assert "registration token:" in srv.output()
    finally:
        srv.stop()


def test_rate_limit_answers_429_with_retry_after(tmp_path: Path) -> None:
    srv = ServerProcess(
        tmp_path / "data", env={"SCITT_OCI_RATE_LIMIT__PER_CLIENT_PER_SECOND": "1", "SCITT_OCI_RATE_LIMIT__BURST": "2"}
    ).start()
    try:
        statuses = [requests.get(srv.url + "/entries/" + "00" * 32, timeout=5) for _ in range(4)]
        limited = [r for r in statuses if r.status_code == 429]
        assert (
            limited and int(limited[0].headers["retry-after"]) >= 1 and _problem(limited[0])[-1] == "Too Many Requests"
        )
    finally:
        srv.stop()


def test_forwarded_for_is_believed_only_from_trusted_proxies(tmp_path: Path) -> None:
    """The rate limit is per client address: the connection's peer, unless the peer is a proxy the
    operator named in http.trusted_proxies (then the client it names in X-Forwarded-For)."""
    limit = {"SCITT_OCI_RATE_LIMIT__PER_CLIENT_PER_SECOND": "0.01", "SCITT_OCI_RATE_LIMIT__BURST": "1"}

    def statuses(srv: ServerProcess) -> list[int]:
        return [
            requests.get(
                srv.url + "/entries/" + "00" * 32, headers={"X-Forwarded-For": f"192.0.2.{n}"}, timeout=5
            ).status_code
            for n in (1, 2)
        ]

    for env, expected in (({}, [404, 429]), ({"SCITT_OCI_HTTP__TRUSTED_PROXIES": '["127.0.0.1"]'}, [404, 404])):
        srv = ServerProcess(tmp_path / f"data{len(env)}", env={**limit, **env}).start()
        try:
            assert statuses(srv) == expected
        finally:
            srv.stop()


def test_many_clients_same_and_different_statements(server: ServerProcess, issuer: keys.CoseKey) -> None:
    import concurrent.futures

    before = _tree_size(server)
    same = _statement(issuer, 5000)
    bodies = [same] * 16 + [_statement(issuer, 5001 + i) for i in range(48)]

    def post(body: bytes) -> tuple[int, bytes]:
        r = requests.post(server.url + "/entries", data=body, headers={"Content-Type": "application/cose"}, timeout=20)
        return r.status_code, r.content

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        results = list(pool.map(post, bodies))
    assert all(status == 201 for status, _ in results)
    assert len({content for _, content in results[:16]}) == 1, "one statement, one receipt"
    assert _tree_size(server) - before == 49


def test_fuzzed_http_surface_never_fails_or_stores(server: ServerProcess) -> None:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    before = _tree_size(server)
    session = requests.Session()

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(
        method=st.sampled_from(["GET", "POST", "PUT", "HEAD"]),
        path=st.sampled_from(
            ["/entries", "/entries/", "/entries/zz", "/checkpoint", "/consistency", "/.well-known/scitt-keys/"]
        )
        | st.text(alphabet="abcdef0123456789/-_.?=&%", max_size=40).map(lambda s: "/" + s),
        content_type=st.sampled_from(
            ["application/cose", "application/cbor", "text/plain", "", "application/cose; charset=x"]
        ),
        body=st.binary(max_size=600) | st.builds(lambda b: b"\xd2\x84" + b, st.binary(max_size=300)),
        auth=st.sampled_from(["", "Bearer x", "Basic Zm9vOmJhcg=="]),
    )
    def probe(method: str, path: str, content_type: str, body: bytes, auth: str) -> None:
        headers = {"Content-Type": content_type} if content_type else {}
        if auth:
            headers["Authorization"] = auth
        r = session.request(method, server.url + path, data=body, headers=headers, timeout=10)
        assert r.status_code < 500, (method, path, r.status_code, r.content[:200])
        if r.status_code >= 400 and method != "HEAD":
            assert r.headers["content-type"] == PROBLEM

    probe()
    assert _tree_size(server) == before


def test_value_sharing_bombs_are_refused_fast_while_healthz_answers(server: ServerProcess) -> None:
    # 229 bytes froze the whole service for seconds (every 9 more bytes doubled it): now a 400 in
    # well under 100 ms, and /healthz answers all the while.
    bombs = [cbor_bomb(229), cbor_bomb(1024), cbor_bomb(229, sign1=True), cbor_bomb(1024, sign1=True)]
    stop = threading.Event()
    statuses: list[int] = []

    def keep_bombing() -> None:
        with requests.Session() as s:
            while not stop.is_set():
                for body in bombs:
                    statuses.append(
                        s.post(
                            server.url + "/entries", data=body, headers={"Content-Type": "application/cose"}, timeout=5
                        ).status_code
                    )

    bomber = threading.Thread(target=keep_bombing)
    bomber.start()
    try:
        with requests.Session() as s:
            for _ in range(20):
                assert s.get(server.url + "/healthz", timeout=1).status_code == 200
    finally:
        stop.set()
        bomber.join(10)
    assert statuses and set(statuses) == {400}
    for body in bombs:
        best = min(_timed_post(server, body) for _ in range(3))  # best of 3: this machine is shared
        assert best < 0.1
        r = requests.post(server.url + "/entries", data=body, headers={"Content-Type": "application/cose"}, timeout=5)
        assert r.status_code == 400 and "tag 28" in str(_problem(r)[-2])


def _timed_post(server: ServerProcess, body: bytes) -> float:
    started = time.perf_counter()
    r = requests.post(server.url + "/entries", data=body, headers={"Content-Type": "application/cose"}, timeout=5)
    assert r.status_code == 400
    return time.perf_counter() - started


def test_an_indefinite_length_statement_is_refused(server: ServerProcess, issuer: keys.CoseKey) -> None:
    definite = _statement(issuer, 4242)
    assert definite[:2] == b"\xd2\x84"
    r = requests.post(
        server.url + "/entries",
        data=b"\xd2\x9f" + definite[2:] + b"\xff",
        headers={"Content-Type": "application/cose"},
        timeout=5,
    )
    assert r.status_code == 400 and "indefinite-length" in str(_problem(r)[-2])
