"""Response headers with non-ASCII digits (`Content-Length: ²`, sent as the Latin-1 byte 0xB2 that
http.client decodes to "²"): `str.isdigit()` accepts them and `int()` does not. A named error or the
default backoff, never a traceback."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator

import pytest

from scitt_oci.oci.client import RegistryClient, RegistryError, RegistrySettings
from scitt_oci.oci.http import ascii_int
from scitt_oci.scrapi.client import ClientError, ScrapiClient

DIGEST = "sha256:" + "ab" * 32


class RawServer:
    """Answers every request on a loopback socket with the same raw bytes, then closes."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                conn.sendall(self.answer)


@pytest.fixture
def raw() -> Iterator[Callable[[bytes], RawServer]]:
    servers: list[RawServer] = []

    def make(answer: bytes) -> RawServer:
        servers.append(RawServer(answer))
        return servers[-1]

    yield make
    for s in servers:
        s.sock.close()


def test_ascii_int() -> None:
    assert ascii_int("12") == 12 and ascii_int(" 7 ") == 7
    for bad in ("\u00b2", "\u0661\u0662", "1e3", "-1", "", "9" * 19, None):
        assert ascii_int(bad) is None


def test_registry_content_length_with_a_superscript_digit_is_a_named_error(raw: Callable[[bytes], RawServer]) -> None:
    server = raw(
        b"HTTP/1.1 200 OK\r\nContent-Length: \xb2\r\nDocker-Content-Digest: "
        + DIGEST.encode()
        + b"\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nConnection: close\r\n\r\n{}"
    )
    client = RegistryClient(RegistrySettings.for_url(f"http://127.0.0.1:{server.port}", attempts=1))
    with pytest.raises(RegistryError, match=r"Content-Length '\\xb2' is not a number"):
        client.head_manifest("app", DIGEST)
    with pytest.raises(RegistryError, match="Content-Length"):
        client.blob("app", DIGEST)


def test_registry_retry_after_with_a_superscript_digit_falls_back_to_backoff(raw: Callable[[bytes], RawServer]) -> None:
    server = raw(b"HTTP/1.1 503 Busy\r\nRetry-After: \xb2\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    slept: list[float] = []
    client = RegistryClient(RegistrySettings.for_url(f"http://127.0.0.1:{server.port}", attempts=2), sleep=slept.append)
    with pytest.raises(RegistryError, match="HTTP 503"):
        client.blob("app", DIGEST)
    assert len(slept) == 1 and slept[0] <= 0.2


def test_service_retry_after_with_a_superscript_digit_falls_back_to_backoff(raw: Callable[[bytes], RawServer]) -> None:
    server = raw(b"HTTP/1.1 503 Busy\r\nRetry-After: \xb2\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
    slept: list[float] = []
    client = ScrapiClient(f"http://127.0.0.1:{server.port}", max_attempts=2, sleep=slept.append)
    with pytest.raises(ClientError, match="503"):
        client.keys()
    assert len(slept) == 1 and slept[0] <= 0.2
