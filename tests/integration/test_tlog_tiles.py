"""The C2SP read API of the service's own log, checked by tlog-scales (an independent tlog-tiles reader
from PyPI): its checkpoint note verifies and its tiles and entry bundles rebuild the checkpoint's root at
several sizes, including partial tiles on every level; the root equals what the COSE receipts sign."""

from __future__ import annotations

import hashlib
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ed25519
from starlette.applications import Starlette

with warnings.catch_warnings():  # starlette asks for httpx2; httpx is what the test extra installs
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient
from tlog_scales import backend as ts_backend
from tlog_scales import reader as ts_reader
from tlog_scales import signing as ts_signing
from tlog_scales import tiles as ts_tiles

from scitt_oci.cose import keys
from scitt_oci.log.sqlite_store import SqliteStore
from scitt_oci.log.store import Pending, entry_id
from scitt_oci.log.tiled import TiledLog
from scitt_oci.scitt import merkle, receipt, statement
from scitt_oci.scrapi.client import ScrapiClient
from scitt_oci.server.tlog_routes import tlog_routes
from scitt_oci.tlog import checkpoint, note, tiles
from tests.helpers import key
from tests.serverproc import ServerProcess


class ClientBackend:
    """tlog-scales' backend interface over an HTTP client (in-process app or live server)."""

    def __init__(self, get: Callable[[str], httpx.Response], prefix: str = "/tlog") -> None:
        self._get = get
        self.prefix = prefix
        self.paths: list[str] = []

    def get(self, *path: str) -> bytes | None:
        url = self.prefix + "/" + "/".join(path)
        self.paths.append("/".join(path))
        r = self._get(url)
        return r.content if r.status_code == 200 else None


def _fill(store: SqliteStore, sizes: list[int]) -> None:
    """Commit synthetic entries in batches ending at each of `sizes` (each batch is one signed head)."""
    k = key()
    done = store.size()
    for target in sizes:
        batch = [Pending(entry_id(e), e) for e in (f"entry {i}".encode() for i in range(done, target))]
        store.commit(
            accept=[],
            integrate=batch,
            sign=lambda n, root: receipt.sign_tree_head(k, issuer="i", subject="s", tree_size=n, root=root, iat=1),
            now=time.time(),
        )
        done = target


@pytest.fixture(scope="module")
def big_log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SqliteStore, TiledLog]]:
    store = SqliteStore(tmp_path_factory.mktemp("tiles") / "log.db", synchronous="NORMAL")
    signer = note.NoteSigner("tiles.test/log", ed25519.Ed25519PrivateKey.generate())
    yield store, TiledLog(store, "tiles.test/log", signer)
    store.close()


SIZES = [1, 255, 256, 257, 4097, 65_536, 65_536 + 256 * 3 + 7]


def _app(tiled: TiledLog) -> TestClient:
    return TestClient(Starlette(routes=tlog_routes(tiled)))


def test_tlog_scales_rebuilds_the_root_at_several_sizes(big_log: tuple[SqliteStore, TiledLog]) -> None:
    store, tiled = big_log
    client = _app(tiled)
    vkey = ts_signing.Vkey.from_string(client.get("/tlog/vkey").text.strip())
    for size in SIZES:
        _fill(store, [size])
        backend = ClientBackend(client.get)
        r = ts_reader.TilesReader(backend)
        cp = r.get_checkpoint()
        cp.verify(vkey)
        assert cp.size == size and cp.origin == "tiles.test/log"
        # The root the COSE tree head for this size signs is the checkpoint's root ...
        head = store.head(size)
        assert head is not None and cp.root_hash == head.root
        # ... and tlog-scales rebuilds it from our tiles alone.
        assert r.calculate_root_hash() == cp.root_hash
        # An entry from the (possibly partial) last bundle, with an inclusion proof to the root.
        leaf = r.get_entry(size - 1)
        assert leaf == f"entry {size - 1}".encode()
        r.get_inclusion_proof(size - 1, size).check(ts_tiles.leaf_hash(leaf), cp.root_hash)
        if size % 256:
            assert any(".p/" in p for p in backend.paths), backend.paths


def test_partial_and_full_tiles_and_their_headers(big_log: tuple[SqliteStore, TiledLog]) -> None:
    store, tiled = big_log
    _fill(store, [SIZES[-1]])
    client = _app(tiled)
    size = store.size()
    full = client.get("/tlog/tile/0/000")
    assert full.status_code == 200 and len(full.content) == 8192
    assert "immutable" in full.headers["cache-control"] and full.headers["content-type"] == "application/octet-stream"
    assert full.content[:32] == merkle.leaf_hash(b"entry 0")
    # A partial tile is the prefix of what the full tile will be.
    part = client.get("/tlog/tile/0/000.p/5")
    assert (
        part.status_code == 200
        and part.content == full.content[:160]
        and "immutable" not in part.headers["cache-control"]
    )
    # Level 1 hash i is the root of level-0 tile i.
    lvl1 = client.get("/tlog/tile/1/000").content
    assert lvl1[:32] == tiles.tile_root(full.content)
    # Beyond the published tree: 404; malformed paths: 400.
    w = size % 256
    assert client.get(f"/tlog/tile/0/{tiles.index_path(size // 256)}.p/{w}").status_code == 200
    assert client.get(f"/tlog/tile/0/{tiles.index_path(size // 256)}.p/{w + 1}").status_code == 404
    assert client.get(f"/tlog/tile/0/{tiles.index_path(size // 256)}").status_code == 404
    assert client.get("/tlog/tile/2/000.p/1").status_code == 200
    assert client.get("/tlog/tile/2/000.p/2").status_code == 404
    for bad in ("/tlog/tile/0/1", "/tlog/tile/0/000.p/0", "/tlog/tile/64/000", "/tlog/tile/entries/x000/001"):
        r = client.get(bad)
        assert r.status_code == 400 and r.headers["content-type"].startswith("text/plain"), bad
    # Entry bundles: gzip when asked, identity otherwise; the same entries either way.
    plain = client.get("/tlog/tile/entries/000", headers={"Accept-Encoding": "identity"})
    assert plain.status_code == 200 and "content-encoding" not in plain.headers
    assert tiles.decode_bundle(plain.content, 256)[3] == b"entry 3"
    zipped = client.get("/tlog/tile/entries/000", headers={"Accept-Encoding": "gzip"})
    assert zipped.headers["content-encoding"] == "gzip" and zipped.content == plain.content
    cp = client.get("/tlog/checkpoint")
    assert cp.headers["content-type"] == "text/plain; charset=utf-8" and "max-age=2" in cp.headers["cache-control"]


def test_empty_log_has_no_checkpoint(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "log.db")
    tiled = TiledLog(store, "empty.test/log", note.NoteSigner("empty.test/log", ed25519.Ed25519PrivateKey.generate()))
    client = _app(tiled)
    assert client.get("/tlog/checkpoint").status_code == 404
    assert client.get("/tlog/tile/0/000.p/1").status_code == 404
    store.close()


# ----- against the real service -----
@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    base = tmp_path_factory.mktemp("ts")
    srv = ServerProcess(
        base / "data",
        env={"SCITT_OCI_REGISTRATION__WAIT_SECONDS": "5", "SCITT_OCI_REGISTRATION__MAX_STATEMENT_BYTES": "100000"},
    ).start()
    yield srv
    srv.stop()


def _register(server: ServerProcess, n: int) -> tuple[bytes, bytes]:
    issuer = keys.load_private_pem((server.data_dir / "keys" / "issuer.pem").read_bytes())
    body = statement.hash_envelope_statement(
        issuer, issuer="https://wabbit.example", subject=f"urn:test:{n}", digest=hashlib.sha256(b"%d" % n).digest()
    ).encode()
    r = requests.post(server.url + "/entries", data=body, headers={"Content-Type": "application/cose"}, timeout=10)
    assert r.status_code == 201, r.content
    return body, r.content


def test_service_checkpoint_root_is_the_receipts_root_and_tlog_scales_agrees(server: ServerProcess) -> None:
    note_key = server.data_dir / "keys" / "note.pem"
    assert note_key.stat().st_mode & 0o777 == 0o600
    receipts = [_register(server, i) for i in range(3)]
    vkey_text = requests.get(server.url + "/tlog/vkey", timeout=5).text.strip()
    vkey = note.parse_vkey(vkey_text)
    assert vkey.name == f"127.0.0.1:{server.port}/tlog"
    data = requests.get(server.url + "/tlog/checkpoint", timeout=5).content
    opened = checkpoint.open_signed(data, [vkey])
    # The last receipt signs the root of the tree of this size.
    ts_keys = ScrapiClient(server.url).keys()
    verified = receipt.verify_receipt(receipts[2][1], statement.parse(receipts[2][0]), ts_keys)
    assert verified.tree_size == opened.checkpoint.size
    assert verified.root == opened.checkpoint.root
    r = ts_reader.TilesReader(ts_backend.HttpBackend(server.url + "/tlog"))
    cp = r.get_checkpoint()
    cp.verify(ts_signing.Vkey.from_string(vkey_text))
    assert r.calculate_root_hash() == opened.checkpoint.root


def test_entries_over_the_bundle_limit_are_refused_with_413(server: ServerProcess) -> None:
    issuer = keys.load_private_pem((server.data_dir / "keys" / "issuer.pem").read_bytes())
    big = statement.hash_envelope_statement(
        issuer,
        issuer="https://wabbit.example",
        subject="urn:test:" + "x" * 65_400,
        digest=hashlib.sha256(b"b").digest(),
    ).encode()
    assert 65_535 < len(statement.parse(big).entry()) < 65_536 + 200
    r = requests.post(server.url + "/entries", data=big, headers={"Content-Type": "application/cose"}, timeout=10)
    assert r.status_code == 413, r.content
    assert b"65535" in r.content
