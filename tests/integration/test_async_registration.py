"""Asynchronous registration: 202 + Location, polling, and a client that also speaks SCRAPI draft -10."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from scitt_oci.cose import keys
from scitt_oci.scitt import receipt, statement
from scitt_oci.scrapi.client import ClientError, ScrapiClient
from tests.helpers import MemoryLog, key
from tests.serverproc import ServerProcess, free_port


def test_202_then_poll_until_200(tmp_path: Path) -> None:
    srv = ServerProcess(
        tmp_path / "data",
        env={
            "SCITT_OCI_REGISTRATION__WAIT_SECONDS": "0",
            "SCITT_OCI_BATCH__MAX_DELAY_MS": "300",
            "SCITT_OCI_BATCH__MAX_SIZE": "1000",
        },
    ).start()
    try:
        issuer = keys.load_private_pem((srv.data_dir / "keys" / "issuer.pem").read_bytes())
        body = statement.hash_envelope_statement(
            issuer, issuer="https://w", subject="urn:a", digest=hashlib.sha256(b"a").digest()
        ).encode()
        r = requests.post(srv.url + "/entries", data=body, headers={"Content-Type": "application/cose"}, timeout=10)
        assert r.status_code == 202 and r.headers["retry-after"] == "1" and not r.content
        location = r.headers["location"]
        first = requests.get(srv.url + location, timeout=5)
        assert first.status_code in (200, 202)

        def short_sleep(seconds: float) -> None:  # the client's pauses, cut to 50 ms at most
            if seconds != 0:
                threading.Event().wait(min(seconds, 0.05))

        got = ScrapiClient(srv.url, sleep=short_sleep).wait_for(location)
        assert receipt.verify_receipt(got, statement.parse(body), ScrapiClient(srv.url).keys()).tree_size == 1
        # The client does all of that by itself.
        body2 = statement.hash_envelope_statement(
            issuer, issuer="https://w", subject="urn:b", digest=hashlib.sha256(b"b").digest()
        ).encode()
        assert ScrapiClient(srv.url).register(body2).receipt
    finally:
        srv.stop()


class Draft10Service:
    """A small double of a SCRAPI draft -10 service (none runs here): 303 on POST, 302 while pending."""

    def __init__(self) -> None:
        self.log = MemoryLog(key(slot=4))
        self.polls = 0
        self.statement: statement.SignedStatement | None = None

    def app(self) -> Starlette:
        async def post(request: Request) -> Response:
            self.statement = statement.parse(await request.body())
            self.log.add(self.statement)
            return Response(status_code=303, headers={"Location": "/operations/1", "Retry-After": "0"})

        async def poll(request: Request) -> Response:
            self.polls += 1
            if self.polls < 3:
                return Response(status_code=302, headers={"Location": "/operations/1", "Retry-After": "0"})
            return Response(self.log.receipt(0), media_type="application/cose")

        async def elsewhere(request: Request) -> Response:
            return Response(status_code=303, headers={"Location": "http://198.51.100.7/steal"})

        return Starlette(
            routes=[
                Route("/entries", post, methods=["POST"]),
                Route("/operations/1", poll),
                Route("/evil/entries", elsewhere, methods=["POST"]),
            ]
        )


@pytest.fixture
def draft10() -> Iterator[tuple[str, Draft10Service]]:
    double = Draft10Service()
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(double.app(), host="127.0.0.1", port=port, log_level="error", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:  # wait for the listening socket
        threading.Event().wait(0.01)
    yield f"http://127.0.0.1:{port}", double
    server.should_exit = True
    thread.join(5)


def test_client_tolerates_draft_10_status_codes(draft10: tuple[str, Draft10Service]) -> None:
    url, double = draft10
    body = statement.build(key(), issuer="https://w", subject="urn:x", payload=b"p").encode()
    got = ScrapiClient(url).register(body)
    assert double.polls == 3
    assert double.statement is not None
    assert receipt.verify_receipt(got.receipt, double.statement, [double.log.signing_key]).leaf_index == 0


def test_client_never_follows_a_location_off_the_service_origin(draft10: tuple[str, Draft10Service]) -> None:
    url, _double = draft10
    with pytest.raises(ClientError, match="outside its own origin"):
        ScrapiClient(url + "/evil").register(b"\xd2\x84")
