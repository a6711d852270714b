"""A manifest PUT that Distribution answers MANIFEST_BLOB_UNKNOWN while another writer re-links the same
blob (its link file is rewritten in place) is tried again; a blob that stays unknown is still an error."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from scitt_oci.oci import manifest as mf
from scitt_oci.oci.client import BLOB_UNKNOWN_ATTEMPTS, RegistryClient, RegistryError, RegistrySettings

UNKNOWN = (
    b'{"errors":[{"code":"DIGEST_INVALID","message":"provided digest did not match uploaded content"},'
    b'{"code":"MANIFEST_BLOB_UNKNOWN","message":"blob unknown to registry","detail":"sha256:44136fa3"}]}'
)


class Registry:
    """Answers each manifest PUT with MANIFEST_BLOB_UNKNOWN `failures` times, then 201."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.puts = 0


@pytest.fixture
def registry(request: pytest.FixtureRequest) -> Iterator[tuple[Registry, str]]:
    state = Registry(request.param)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_PUT(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            state.puts += 1
            failing = state.puts <= state.failures
            body = UNKNOWN if failing else b""
            self.send_response(400 if failing else 201)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


MANIFEST = mf.canonical_json({"schemaVersion": 2, "mediaType": mf.OCI_MANIFEST, "layers": []})


@pytest.mark.parametrize("registry", [1], indirect=True)
def test_a_blob_unknown_while_another_writer_links_it_is_tried_again(registry: tuple[Registry, str]) -> None:
    state, url = registry
    client = RegistryClient(RegistrySettings.for_url(url))
    digest, _ = client.push_manifest("app", MANIFEST, mf.OCI_MANIFEST)
    assert digest == mf.digest_of(MANIFEST) and state.puts == 2


@pytest.mark.parametrize("registry", [100], indirect=True)
def test_a_blob_that_stays_unknown_is_an_error_after_bounded_tries(registry: tuple[Registry, str]) -> None:
    state, url = registry
    client = RegistryClient(RegistrySettings.for_url(url))
    with pytest.raises(RegistryError, match="MANIFEST_BLOB_UNKNOWN"):
        client.push_manifest("app", MANIFEST, mf.OCI_MANIFEST)
    assert state.puts == BLOB_UNKNOWN_ATTEMPTS
