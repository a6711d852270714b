"""X.509-signed statements registered over SCRAPI against `scitt-oci serve`, configured through
registration.x509_roots and registration.x509_issuers (the configuration reaches the policy)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import cbor2
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from scitt_oci.cose import sign1
from scitt_oci.scitt import did_x509
from tests.serverproc import ServerProcess
from tests.unit.test_x509_statements import CODE_SIGNING, DAY, NOW, Pki, _signed

ISS = "https://wabbit-networks.example"


@pytest.fixture(scope="module")
def pki() -> Pki:
    return Pki()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[ServerProcess]:
    base = tmp_path_factory.mktemp("x509")
    (base / "root.pem").write_bytes(pki.root.public_bytes(serialization.Encoding.PEM))
    env = {
        "SCITT_OCI_REGISTRATION__X509_ROOTS": json.dumps([str(base / "root.pem")]),
        "SCITT_OCI_REGISTRATION__X509_ISSUERS": json.dumps(
            [{"iss": ISS, "subject": {"O": "Wabbit Networks"}, "eku": [CODE_SIGNING]}]
        ),
    }
    srv = ServerProcess(base / "data", env=env).start()
    yield srv
    srv.stop()


def _post(server: ServerProcess, body: bytes) -> requests.Response:
    return requests.post(server.url + "/entries", data=body, headers={"Content-Type": "application/cose"}, timeout=10)


def _detail(r: requests.Response) -> str:
    assert r.status_code == 400, (r.status_code, r.content)
    return str(cbor2.loads(r.content)[-2])


def test_bound_issuers_register_and_others_are_refused_with_the_reason(server: ServerProcess, pki: Pki) -> None:
    signer = ec.generate_private_key(ec.SECP256R1())
    wabbit = pki.leaf(signer.public_key())
    assert _post(server, _signed(signer, wabbit).encode()).status_code == 201
    did = did_x509.create(pki.root, subject=[("O", "Wabbit Networks")])
    assert _post(server, _signed(signer, wabbit, iss=did).encode()).status_code == 201
    mallory = pki.leaf(signer.public_key(), cn="Mallory", org="Mallory Inc")
    assert "subject O is 'Mallory Inc', not 'Wabbit Networks'" in _detail(
        _post(server, _signed(signer, mallory).encode())
    )
    other_iss = _detail(_post(server, _signed(signer, wabbit, iss="https://acme-rockets.example").encode()))
    assert "is not bound to certificate" in other_iss and "registration.x509_issuers" in other_iss
    expired = pki.leaf(signer.public_key(), start=NOW - 900 * DAY, end=NOW - 700 * DAY)
    assert "does not chain to a trusted root at" in _detail(
        _post(server, _signed(signer, expired, iat=NOW - 800 * DAY).encode())
    )
    unprotected = _detail(_post(server, _signed(signer, wabbit, where="unprotected").encode()))
    assert "unprotected header" in unprotected


def test_a_text_string_kid_is_a_malformed_request(server: ServerProcess, pki: Pki) -> None:
    from scitt_oci.cose import keys

    issuer = keys.CoseKey.from_key(ec.generate_private_key(ec.SECP256R1()))
    body = sign1.sign(issuer, {1: -7, 4: "wabbit-key", 15: {1: ISS, 2: "urn:x"}}, b"p").encode()
    r = _post(server, body)
    assert r.status_code == 400 and cbor2.loads(r.content)[-1] == "Malformed request"
    assert "RFC 9052: kid is bstr" in str(cbor2.loads(r.content)[-2])


def test_config_refuses_an_unbound_x509_issuer(tmp_path: Path) -> None:
    from scitt_oci.config import load
    from scitt_oci.errors import ConfigError

    with pytest.raises(ConfigError, match="names no subject, san or eku"):
        load(environ={"SCITT_OCI_REGISTRATION__X509_ISSUERS": json.dumps([{"iss": ISS}])})
