"""The published issuers and the key route, in process: what `trust pin` reads."""

from __future__ import annotations

import base64
from pathlib import Path

import cbor2
from starlette.testclient import TestClient

from scitt_oci import config, runtime
from scitt_oci.cose import keys


def _app(tmp_path: Path, **overrides: object) -> runtime.Runtime:
    return runtime.build(config.load(None, environ={}, overrides={"data_dir": str(tmp_path / "data"), **overrides}))


def test_issuers_follow_watch_issuer_and_publish_only_the_public_key(tmp_path: Path) -> None:
    rt = _app(tmp_path, watch={"issuer": "https://wabbit-networks.example"})
    try:
        with TestClient(rt.app) as http:
            r = http.get("/.well-known/scitt-oci/issuers")
            assert r.status_code == 200 and r.headers["content-type"] == "application/json"
            [entry] = r.json()["issuers"]
            assert entry["iss"] == "https://wabbit-networks.example"
            [jwk] = entry["keys"]
            assert set(jwk) == {"kty", "crv", "x", "y", "kid", "alg"}  # no private member
            assert keys.from_jwk(jwk).kid == rt.issuer_key.kid
            assert http.get("/.well-known/scitt-oci/issuers", headers={"Accept": "text/html"}).status_code == 406
    finally:
        rt.service.store.close()


def test_key_route_takes_hex_base64url_and_nothing_else(tmp_path: Path) -> None:
    rt = _app(tmp_path)
    try:
        kid = rt.service.key.kid
        with TestClient(rt.app) as http:
            for form in (kid.hex(), kid.hex().upper(), base64.urlsafe_b64encode(kid).rstrip(b"=").decode()):
                r = http.get(f"/.well-known/scitt-keys/{form}")
                assert r.status_code == 200 and keys.from_cose(cbor2.loads(r.content)).kid == kid, form
            assert http.get(f"/.well-known/scitt-keys/{'00' * 32}").status_code == 404
            assert (
                http.get(f"/.well-known/scitt-keys/{rt.issuer_key.kid.hex()}").status_code == 404
            )  # not a receipt key
    finally:
        rt.service.store.close()
