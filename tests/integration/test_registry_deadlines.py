"""A registry that answers slowly (a byte at a time) cannot hold a caller: each call has a total
deadline over headers and body, a watcher event that runs out of time goes back to the inbox for a
later retry, and `scitt-oci verify IMAGE --timeout N` ends within about N seconds."""

from __future__ import annotations

import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from scitt_oci import transport
from scitt_oci.oci.client import RegistryClient, RegistrySettings, TransientRegistryError
from scitt_oci.scrapi.client import ClientError, ScrapiClient
from scitt_oci.watch.events import PUSH, RegistryEvent
from scitt_oci.watch.inbox import Inbox
from scitt_oci.watch.worker import Watcher
from tests.helpers import key
from tests.loopproxy import LoopProxy

D = "sha256:" + "ab" * 32
TRICKLE_SECONDS = 0.1  # between two bytes
MAX_BYTES = 400  # each connection ends after this many (40 s): a bound on the test, never reached


class TrickleRegistry:
    """Loopback HTTP server that sends every answer one byte per TRICKLE_SECONDS: either the body
    (headers at once, with a Content-Length it never reaches) or the headers themselves; or, in
    "second-body", the first answer on a connection at once and the next one's body trickled."""

    def __init__(self, mode: str) -> None:
        self.mode = mode  # "body", "headers" or "second-body"
        self.stop = threading.Event()
        self.connections = 0
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._threads: list[threading.Thread] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._sock.getsockname()[1]}"

    def __enter__(self) -> TrickleRegistry:
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        try:
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes the accept() below
        except OSError:
            pass
        self._sock.close()
        for t in self._threads:
            t.join(5)

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self.connections += 1
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            t.start()
            self._threads.append(t)

    def _answer(self) -> Iterator[bytes]:
        head, body = self._head_and_body()
        if self.mode == "headers":
            for i in range(len(head)):
                yield head[i : i + 1]
            while True:  # one header line that never ends
                yield b"x"
        yield head + b"\r\n"
        for i in range(len(body)):
            yield body[i : i + 1]

    @staticmethod
    def _head_and_body() -> tuple[bytes, bytes]:
        body = b'{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json"}' * 10
        head = (
            b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\n"
            + b"Content-Length: %d\r\n" % len(body)
        )
        return head, body

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            seen = b""
            try:
                while b"\r\n\r\n" not in seen:
                    data = conn.recv(4096)
                    if not data:
                        return
                    seen += data
                if self.mode == "second-body":  # a prompt first answer keeps the connection for the next
                    head, body = self._head_and_body()
                    conn.sendall(head + b"\r\n" + body)
                    seen = seen.partition(b"\r\n\r\n")[2]
                    while b"\r\n\r\n" not in seen:
                        data = conn.recv(4096)
                        if not data:
                            return
                        seen += data
                sent = 0
                for piece in self._answer():
                    conn.sendall(piece)
                    sent += len(piece)
                    if sent > 1 and (sent >= MAX_BYTES or self.stop.wait(TRICKLE_SECONDS)):
                        return
            except OSError:  # the client gave up and closed: what a bounded client does
                return


def _client(url: str, timeout: float, deadline: float | None = None) -> RegistryClient:
    return RegistryClient(RegistrySettings.for_url(url, timeout=timeout, attempts=4), deadline=deadline)


@dataclass
class _NeverRegisters:
    """The registrar of a watcher whose event times out before it has anything to register."""

    identity: str = "https://ts.example"

    def register(self, statement: bytes) -> bytes:
        raise AssertionError("nothing is registered when the registry does not answer in time")


@pytest.mark.parametrize("mode", ["body", "headers"])
def test_a_trickling_registry_is_cut_off_at_the_call_deadline(mode: str) -> None:
    with TrickleRegistry(mode) as registry:
        client = _client(registry.url, timeout=1.0)
        started = time.monotonic()
        with pytest.raises(TransientRegistryError, match="no complete answer within 1 s"):
            client.manifest("slow/app", D)
        elapsed = time.monotonic() - started
        # one call, one deadline: not retried in place (attempts=4 would make it 4 s and more)
        assert 0.9 <= elapsed < 2.5, elapsed
        assert registry.connections == 1


def test_the_client_deadline_bounds_all_calls_together() -> None:
    with TrickleRegistry("body") as registry:
        client = _client(registry.url, timeout=10.0, deadline=time.monotonic() + 1.5)
        started = time.monotonic()
        with pytest.raises(TransientRegistryError):
            client.manifest("slow/app", D)
        with pytest.raises(TransientRegistryError, match="the time allowed for the whole operation has passed"):
            client.manifest("slow/app", D)
        assert time.monotonic() - started < 3.0


def test_a_timed_out_event_goes_back_to_the_inbox_for_a_later_retry(tmp_path: Path) -> None:
    inbox = Inbox(tmp_path / "inbox.db", base_delay=5.0)
    with TrickleRegistry("body") as registry:
        client = _client(registry.url, timeout=1.0)
        watcher = Watcher(
            inbox, {client.settings.name: client}, key(), "https://issuer.example", registrar=_NeverRegisters()
        )
        inbox.add(client.settings.name, [RegistryEvent("slow/app", D, "v1", PUSH)])
        (item,) = inbox.claim(1)
        started, wall = time.monotonic(), time.time()
        watcher.process(item)
        assert time.monotonic() - started < 2.5
    with sqlite3.connect(tmp_path / "inbox.db") as db:
        state, attempts, next_at, error = db.execute(
            "SELECT state, attempts, next_at, last_error FROM events"
        ).fetchone()
    assert (state, attempts) == ("pending", 1), error
    assert "no complete answer within 1 s" in error
    assert next_at >= wall + 2.5  # backed off (base_delay 5 s, jittered by half at most): not lost, not taken at once
    assert inbox.claim(1) == []


def test_verify_timeout_is_a_total_bound(tmp_path: Path) -> None:
    public = ec.generate_private_key(ec.SECP256R1()).public_key()
    (tmp_path / "ts.pem").write_bytes(public.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo))
    (tmp_path / "p.yaml").write_text("transparency_services: [{name: t, keys: [{path: ts.pem}]}]\n")
    with TrickleRegistry("body") as registry:
        host = registry.url.removeprefix("http://")
        started = time.monotonic()
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "scitt_oci",
                "verify",
                f"{host}/slow/app@{D}",
                "--registry-insecure",
                "--trust",
                "p.yaml",
                "--timeout",
                "2",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            cwd=tmp_path,
        )
        elapsed = time.monotonic() - started
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "no complete answer within 2 s" in done.stderr, done.stderr
    assert elapsed < 2 + 3.0, elapsed  # 2 s, plus the interpreter's start-up


# The transport itself (every outbound call: registry, SCRAPI, tiled-log reader) keeps the total deadline.


@pytest.mark.parametrize("mode", ["body", "headers"])
@pytest.mark.parametrize("stream", [False, True])
def test_the_transport_cuts_a_trickling_answer_off_at_its_deadline(mode: str, stream: bool) -> None:
    session = transport.Session(environ={})
    with TrickleRegistry(mode) as registry:
        started = time.monotonic()
        with pytest.raises(transport.DeadlineExceeded, match="no complete answer within 1 s"):
            r = session.get(registry.url + "/v2/slow/app/manifests/" + D, timeout=1.0, stream=stream)
            b"".join(r.iter_content(65536))
        elapsed = time.monotonic() - started
    assert 0.9 <= elapsed < 2.5, elapsed
    assert registry.connections == 1  # a deadline is not retried on a fresh connection


def test_a_reused_keep_alive_connection_keeps_the_deadline() -> None:
    session = transport.Session(environ={})
    with TrickleRegistry("second-body") as registry:
        first = session.get(registry.url + "/v2/", timeout=1.0)
        assert first.status_code == 200 and len(first.content) > 0
        started = time.monotonic()
        with pytest.raises(transport.DeadlineExceeded):
            session.get(registry.url + "/v2/again", timeout=1.0)
        elapsed = time.monotonic() - started
    assert 0.9 <= elapsed < 2.5, elapsed
    assert registry.connections == 1  # the second request ran on the first one's connection


def test_the_deadline_holds_through_a_proxy() -> None:
    with TrickleRegistry("body") as registry, LoopProxy() as proxy:
        session = transport.Session(environ={"HTTP_PROXY": proxy.url}, proxy_loopback=True)
        started = time.monotonic()
        with pytest.raises(transport.DeadlineExceeded):
            session.get(registry.url + "/v2/", timeout=1.0)
        elapsed = time.monotonic() - started
    assert 0.9 <= elapsed < 2.5, elapsed
    assert proxy.seen["forwarded"]["127.0.0.1"] == 1


@pytest.mark.parametrize("mode", ["body", "headers"])
def test_the_scrapi_client_is_cut_off_at_its_timeout(mode: str) -> None:
    with TrickleRegistry(mode) as service:
        client = ScrapiClient(service.url, timeout=1.0, max_attempts=1)
        started = time.monotonic()
        with pytest.raises(ClientError, match="no answer in time"):
            client.keys()
        elapsed = time.monotonic() - started
    assert 0.9 <= elapsed < 2.5, elapsed
