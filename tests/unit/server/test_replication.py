"""The C2SP tiles, the witness and their configuration, in process: the runtime built from a
configuration as `serve` builds it, served by Starlette's TestClient."""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from starlette.testclient import TestClient

from scitt_oci import config, keyfiles, runtime
from scitt_oci.errors import ConfigError
from scitt_oci.replication.mirror import MirrorStore
from scitt_oci.runtime import replication as compose
from scitt_oci.scitt import statement
from scitt_oci.server import replication
from scitt_oci.tlog import checkpoint, note, tiles
from scitt_oci.tlog import witness as wire

ORIGIN = "ts.example/tlog"


def _load(tmp_path: Path, **overrides: Any) -> config.Config:
    return config.load(None, environ={}, overrides={"data_dir": str(tmp_path / "data"), **overrides})


@contextmanager
def _served(cfg: config.Config) -> Iterator[tuple[runtime.Runtime, TestClient]]:
    rt = runtime.build(cfg, run_sequencer=True)
    try:
        with TestClient(rt.app) as http:
            yield rt, http
    finally:
        rt.service.store.close()


def _register(rt: runtime.Runtime, http: TestClient, n: int) -> None:
    digest = hashlib.sha256(f"image {n}".encode()).digest()
    data = statement.hash_envelope_statement(
        rt.issuer_key, issuer=rt.service.identity, subject=f"oci://r.example/app@sha256:{digest.hex()}", digest=digest
    ).encode()
    assert http.post("/entries", content=data, headers={"Content-Type": "application/cose"}).status_code == 201


def _note_key(tmp_path: Path) -> tuple[Path, note.Verifier]:
    path = tmp_path / "note.pem"
    key = compose.ed25519_key(path, create=True)
    return path, note.NoteSigner(ORIGIN, key).verifier


def test_tiles_checkpoint_and_entry_bundles_are_served(tmp_path: Path) -> None:
    key_path, verifier = _note_key(tmp_path)
    with _served(_load(tmp_path, tlog={"origin": ORIGIN, "note_key": str(key_path)})) as (rt, http):
        assert http.get("/tlog/checkpoint").status_code == 404
        assert http.get("/tlog/vkey").text == verifier.vkey + "\n"
        for n in range(3):
            _register(rt, http, n)
        r = http.get("/tlog/checkpoint")
        assert r.status_code == 200 and r.headers["cache-control"] == "public, max-age=2"
        opened = checkpoint.open_signed(r.content, [verifier])
        assert opened.checkpoint.size == 3 and opened.checkpoint.origin == ORIGIN
        tile = http.get("/tlog/tile/0/000.p/3")
        assert tile.status_code == 200 and len(tile.content) == 3 * 32
        assert tile.headers["cache-control"] == "public, max-age=3600"
        plain = http.get("/tlog/tile/entries/000.p/3", headers={"Accept-Encoding": "identity"})
        assert plain.status_code == 200 and "content-encoding" not in plain.headers
        assert plain.headers["vary"] == "Accept-Encoding"
        zipped = http.get("/tlog/tile/entries/000.p/3", headers={"Accept-Encoding": "br, gzip;q=0.5"})
        assert zipped.headers["content-encoding"] == "gzip" and zipped.content == plain.content  # decoded by httpx
        with http.stream("GET", "/tlog/tile/entries/000.p/3", headers={"Accept-Encoding": "gzip"}) as streamed:
            assert gzip.decompress(b"".join(streamed.iter_raw())) == plain.content
        assert http.get("/tlog/tile/0/000.p/4").status_code == 404  # beyond the published tree
        bad = http.get("/tlog/tile/0/x")
        assert bad.status_code == 400 and bad.headers["content-type"] == "text/plain; charset=utf-8"
        assert rt.service.max_entry_bytes == tiles.MAX_ENTRY  # entries must fit a bundle


def test_the_witness_cosigns_a_checkpoint_of_a_log_it_witnesses(tmp_path: Path) -> None:
    key_path, verifier = _note_key(tmp_path)
    cfg = _load(
        tmp_path,
        tlog={"origin": ORIGIN, "note_key": str(key_path)},
        witness={"logs": [{"vkey": verifier.vkey}], "name": "ts.example/witness"},
    )
    with _served(cfg) as (rt, http):
        assert rt.replication is not None and rt.replication.witness is not None
        wkey = note.parse_vkey(http.get("/tlog/witness/vkey").text.strip())
        assert wkey.name == "ts.example/witness"
        _register(rt, http, 1)
        body = wire.encode(0, [], http.get("/tlog/checkpoint").content)
        r = http.post("/tlog/witness/add-checkpoint", content=body)
        assert r.status_code == 200, r.text
        assert checkpoint.cosigned_by(note.parse(http.get("/tlog/checkpoint").content + r.content), [wkey]) == [wkey]
        assert http.post("/tlog/witness/add-checkpoint", content=b"old x\n").status_code == 400
        too_big = http.post("/tlog/witness/add-checkpoint", content=b"x" * (64 * 1024 + 1))
        assert too_big.status_code == 413 and "at most 65536 bytes" in too_big.text


def test_the_witness_client_is_made_when_witnesses_are_configured(tmp_path: Path) -> None:
    peer = note.Verifier(
        "peer.example/witness",
        note.COSIGNATURE_V1,
        ed25519.Ed25519PrivateKey.generate().public_key().public_bytes_raw(),
    )
    cfg = _load(tmp_path, witnesses=[{"url": "http://127.0.0.1:9", "vkey": peer.vkey}], witness_quorum=1)
    rt = runtime.build(cfg)
    try:
        assert rt.replication is not None and rt.replication.witness_client is not None
        assert rt.replication.tiled is not None and rt.replication.tiled.publish_size is not None
    finally:
        rt.service.store.close()


_RAW = ed25519.Ed25519PrivateKey.generate().public_key().public_bytes_raw()
_COSIGNER_VKEY = note.Verifier("other.example/witness", note.COSIGNATURE_V1, _RAW).vkey
_LOG_VKEY = note.Verifier("other.example/tlog", note.ED25519, _RAW).vkey


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"tlog": {"origin": "has space/tlog"}}, "tlog.origin 'has space/tlog'"),
        ({"witness": {"logs": [{"vkey": "not a vkey"}]}}, r"witness.logs\[0\].vkey"),
        ({"witness": {"logs": [{"vkey": _COSIGNER_VKEY}]}}, "is not an Ed25519 note key"),
        ({"witness": {"logs": [{"vkey": _LOG_VKEY}], "name": "bad name"}}, "witness.name 'bad name'"),
        ({"witness_quorum": 1}, "witness_quorum 1 is more than the 0 witnesses configured"),
        ({"witnesses": [{"url": "http://127.0.0.1:9", "vkey": "x+00000000+AQ=="}]}, r"witnesses\[0\].vkey"),
    ],
)
def test_bad_replication_settings_are_named_errors(tmp_path: Path, overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        runtime.build(_load(tmp_path, **overrides))


def test_a_note_key_that_is_not_ed25519_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "es256.pem"
    keyfiles.private_key(path, create_alg="ES256")
    with pytest.raises(ConfigError, match="must hold an Ed25519 private key"):
        runtime.build(_load(tmp_path, tlog={"note_key": str(path)}))


def test_tiles_can_be_switched_off(tmp_path: Path) -> None:
    with _served(_load(tmp_path, tlog={"enabled": False})) as (rt, http):
        assert rt.service.max_entry_bytes is None
        assert http.get("/tlog/checkpoint").status_code == 404
        assert http.get("/tlog/vkey").status_code == 404


def test_default_origin_is_the_identity_without_its_scheme(tmp_path: Path) -> None:
    assert compose.default_origin(_load(tmp_path, identity="https://ts.example/")) == "ts.example/tlog"
    assert compose.default_origin(_load(tmp_path)) == "127.0.0.1:8700/tlog"


def test_a_mirror_data_dir_is_served_read_only(tmp_path: Path) -> None:
    data = tmp_path / "mirror"
    MirrorStore(data)
    assert replication.is_mirror(data)
    (data / "log.db").write_bytes(b"")
    assert not replication.is_mirror(data)  # a service's own data dir holds its log
    (data / "log.db").unlink()
    with TestClient(replication.mirror_app(data)) as http:
        assert http.get("/healthz").text == "ok\n" and http.get("/readyz").text == "ok\n"
        assert http.get("/tlog/checkpoint").status_code == 404
        text = http.get("/metrics").text
        assert "scitt_mirror_tree_size 0.0" in text and "scitt_mirror_forks 0.0" in text
        assert http.post("/entries", content=b"x").status_code in (404, 405)
