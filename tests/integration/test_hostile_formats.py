"""Hostile but well-formed CBOR in statements, keys and queries: named errors (4xx, a normal verdict,
a CLI error), never a 500 or a traceback. Each was a 500 or a traceback before."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cbor2
import pytest
import requests
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from scitt_oci.cli import main
from scitt_oci.cose import headers, keys, sign1
from scitt_oci.errors import MalformedError, ScittOciError, UnsupportedError
from scitt_oci.log.policy import RegistrationPolicy, Rejection, RejectionKind
from scitt_oci.scitt import statement
from scitt_oci.scitt.x509chain import CertificateRule, IssuerBinding
from scitt_oci.server.scrapi import REJECTION_STATUS
from scitt_oci.verify import trust
from scitt_oci.verify.verifier import verify_transparent_statement
from tests.helpers import cert_chain, key
from tests.hostileserver import HostileServer
from tests.serverproc import ServerProcess

COSE = "application/cose"
PROBLEM = "application/concise-problem-details+cbor"
ISS = "https://wabbit.example"
HOSTILE_CRIT: list[Any] = [[[1]], [{1: 1}], [1, [2]], [{}]]  # each a crit value


def _with_crit(crit: Any, signer: keys.CoseKey | None = None) -> bytes:
    """A statement signed by `signer` (default: the issuer key of slot 0) whose crit is `crit`."""
    signer = signer or key()
    protected = {headers.KID: signer.kid, headers.CWT_CLAIMS: {1: ISS, 2: "urn:crit"}, headers.CRIT: crit}
    return sign1.sign(signer, protected, hashlib.sha256(b"crit").digest()).encode()


def test_history_says_why_a_record_is_unreadable() -> None:
    """F5 follow-up: `history` showed an attached statement with crit [[1]] as "?  ?  by None"."""
    from scitt_oci.cli.watch import _describe, _record_lines

    lines = _record_lines(_describe("sha256:" + "cd" * 32, _with_crit([[1]])))
    assert len(lines) == 1 and "None" not in lines[0], lines
    assert f"unreadable record sha256:{'cd' * 32}: " in lines[0] and "crit (2) must list header labels" in lines[0]


def _with_iat(iat: int, leaf_key: ec.EllipticCurvePrivateKey, chain: list[Any]) -> bytes:
    ders = [c.public_bytes(serialization.Encoding.DER) for c in chain]
    signer = keys.CoseKey.from_key(leaf_key)
    protected = {headers.CWT_CLAIMS: {1: ISS, 2: "urn:iat", 6: iat}, headers.X5CHAIN: ders}
    return sign1.sign(signer, protected, hashlib.sha256(b"iat").digest()).encode()


# ----------------------------------------------------------------------------- function level


def test_crit_in_the_unprotected_header_is_a_format_error() -> None:
    """RFC 9052 3.1: crit must be protected. The log strips the unprotected header, but a statement that
    breaks the rule is malformed, not registered as if it had not (it was accepted, then stripped)."""
    signed = sign1.sign(key(), {headers.CWT_CLAIMS: {1: "https://i", 2: "urn:x"}}, b"payload")
    data = sign1.Sign1(
        signed.protected_bytes, signed.protected, {headers.CRIT: [999]}, b"payload", signed.signature
    ).encode()
    with pytest.raises(MalformedError, match=r"crit \(2\) must be in the protected header"):
        sign1.decode(data)
    with pytest.raises(Rejection) as refused:
        RegistrationPolicy(issuer_keys=(key(),)).check(data)
    assert refused.value.kind is RejectionKind.MALFORMED


@pytest.mark.parametrize("crit", HOSTILE_CRIT)
def test_crit_holding_arrays_or_maps_is_a_format_error(tmp_path: Path, crit: Any) -> None:
    data = _with_crit(crit)
    with pytest.raises(MalformedError, match=r"crit \(2\) must list header labels"):
        sign1.decode(data)
    with pytest.raises(Rejection) as refused:
        RegistrationPolicy(issuer_keys=(key(),)).check(data)
    assert refused.value.kind is RejectionKind.MALFORMED and "crit (2)" in refused.value.detail
    assert REJECTION_STATUS.get(refused.value.kind, 400) == 400
    (tmp_path / "t.pem").write_bytes(key(slot=5).public_pem())
    (tmp_path / "i.pem").write_bytes(key().public_pem())
    (tmp_path / "p.yaml").write_text(
        "transparency_services: [{name: t, keys: [{path: t.pem}]}]\nissuers: [{name: i, keys: [{path: i.pem}]}]\n"
    )
    result = verify_transparent_statement(data, trust.load_policy(tmp_path / "p.yaml"))
    assert not result.valid and result.reason_codes == ["MALFORMED"]
    # A label we do not understand is still refused as such (not as malformed).
    with pytest.raises(UnsupportedError, match="not understood"):
        sign1.decode(_with_crit([-70000]))


@pytest.mark.parametrize("crv", [[1], {1: 1}, 1.0, True, "P-256"])
def test_a_cose_key_whose_crv_is_not_an_integer_is_refused(crv: Any) -> None:
    good = key().to_cose()
    with pytest.raises(UnsupportedError, match="curve .* is not supported"):
        keys.from_cose({**good, keys.CRV: crv})
    with pytest.raises(ScittOciError):
        keys.load_cose_key_set(cbor2.dumps([{**good, keys.CRV: crv}]))


@pytest.mark.parametrize("iat", [2**63, 2**64 - 1, -(2**63), 10**15])
def test_an_iat_no_date_can_hold_beside_an_x5chain_is_never_a_500(tmp_path: Path, iat: int) -> None:
    """The chain is judged at the time a receipt proves (or now), never at the iat: an iat no date can
    hold changes nothing, at registration or at verification (it was an OverflowError, a 500)."""
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    chain, root = cert_chain(leaf_key)
    data = _with_iat(iat, leaf_key, chain)
    match = statement.verify(statement.parse(data), x509_roots=[root])
    assert match.validated_at is not None and match.validated_at.year >= 2026
    binding = IssuerBinding(ISS, CertificateRule((("CN", "Wabbit Networks signing"),), (), ()))
    assert RegistrationPolicy.build(x509_roots=[root], x509_issuers=[binding]).check(data)
    with pytest.raises(Rejection) as refused:  # an unbound iss is refused with its reason, not a 500
        RegistrationPolicy(x509_roots=(root,)).check(data)
    assert refused.value.kind is RejectionKind.REJECTED and "is not bound to certificate" in str(refused.value)
    assert REJECTION_STATUS.get(refused.value.kind, 400) == 400
    # the verifier (verify, admission, Gatekeeper): a verdict with the reason, not an exception
    (tmp_path / "t.pem").write_bytes(key(slot=5).public_pem())
    (tmp_path / "roots.pem").write_bytes(root.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "p.yaml").write_text(
        "transparency_services: [{name: t, keys: [{path: t.pem}]}]\n"
        "issuers: [{name: w, x509_roots: [{path: roots.pem}], iss: 'https://wabbit.example', "
        "certificate: {subject: {CN: Wabbit Networks signing}}}]\n"
    )
    result = verify_transparent_statement(data, trust.load_policy(tmp_path / "p.yaml"))
    assert result.reason_codes == ["NO_RECEIPTS"], result.to_json()  # the statement itself verified


# ----------------------------------------------------------------------------- over HTTP


@pytest.fixture(scope="module")
def x509_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Any, Any]]:
    base = tmp_path_factory.mktemp("x509ts")
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    chain, root = cert_chain(leaf_key)
    (base / "root.pem").write_bytes(root.public_bytes(serialization.Encoding.PEM))
    env = {
        "SCITT_OCI_REGISTRATION__X509_ROOTS": json.dumps([str(base / "root.pem")]),
        "SCITT_OCI_REGISTRATION__X509_ISSUERS": json.dumps(
            [{"iss": ISS, "subject": {"CN": "Wabbit Networks signing"}}]
        ),
    }
    srv = ServerProcess(base / "data", env=env).start()
    yield srv, leaf_key, chain
    srv.stop()


def _post(srv: ServerProcess, body: bytes) -> requests.Response:
    return requests.post(srv.url + "/entries", data=body, headers={"Content-Type": COSE}, timeout=10)


def _detail(r: requests.Response) -> str:
    assert r.headers["content-type"] == PROBLEM
    return str(cbor2.loads(r.content)[-2])


def test_hostile_values_over_http_are_400s(x509_server: tuple[ServerProcess, Any, Any]) -> None:
    srv, leaf_key, chain = x509_server
    for crit in HOSTILE_CRIT:
        r = _post(srv, _with_crit(crit))
        assert r.status_code == 400 and "crit (2) must list header labels" in _detail(r)
    # an iat no date can hold is not what the chain is judged at: it registers like an ordinary one
    assert _post(srv, _with_iat(2**63, leaf_key, chain)).status_code in (201, 202)
    assert _post(srv, _with_iat(int(time.time()), leaf_key, chain)).status_code in (201, 202)
    for query in (
        "from=1&to=12345678901234567890",
        "from=12345678901234567890",
        "from=1&to=9223372036854775808",
        "from=%D9%A1",  # U+0661 ARABIC-INDIC DIGIT ONE: int() would take it
        "from=+1",
        "from=-1",
    ):
        r = requests.get(f"{srv.url}/consistency?{query}", timeout=5)
        assert r.status_code == 400 and "decimal integers" in _detail(r), query
    assert requests.get(f"{srv.url}/consistency?from=1&to=9223372036854775807", timeout=5).status_code == 404


def test_trust_pin_refuses_a_key_set_whose_crv_is_an_array(tmp_path: Path) -> None:
    bad = cbor2.dumps([{**key().to_cose(), keys.CRV: [1]}])
    with HostileServer({"GET /.well-known/scitt-keys": (200, "application/cbor", bad)}) as ts:
        result = CliRunner().invoke(main, ["trust", "pin", ts.url, "--out", str(tmp_path / "k.cbor")])
    assert result.exit_code == 2 and "curve [1] is not supported" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_statement_inspect_shows_unknown_critical_headers_and_says_verification_refuses(tmp_path: Path) -> None:
    # Shaped like Microsoft's attested statements: text labels we do not implement, marked critical.
    signer = key()
    protected = {
        headers.KID: signer.kid,
        headers.CWT_CLAIMS: {1: ISS, 2: "urn:attested"},
        "css-attested-svn": 3,
        "css-attested-product": "example",
        headers.CRIT: ["css-attested-svn", "css-attested-product"],
    }
    path = tmp_path / "attested.cose"
    path.write_bytes(sign1.sign(signer, protected, hashlib.sha256(b"a").digest()).encode())
    shown = CliRunner().invoke(main, ["statement", "inspect", str(path)])
    assert shown.exit_code == 0, shown.output
    assert "critical header labels ['css-attested-svn', 'css-attested-product'] are not understood" in shown.output
    assert "verification will refuse this statement" in shown.output and "css-attested-svn: 3" in shown.output
    as_json = json.loads(CliRunner().invoke(main, ["statement", "inspect", str(path), "--output", "json"]).output)
    assert (
        "verification will refuse" in as_json["warning"] and as_json["protected"]["css-attested-product"] == "example"
    )
    # Verification still refuses it, whichever way it is parsed.
    (tmp_path / "t.pem").write_bytes(key(slot=5).public_pem())
    (tmp_path / "i.pem").write_bytes(signer.public_pem())
    (tmp_path / "p.yaml").write_text(
        "transparency_services: [{name: t, keys: [{path: t.pem}]}]\nissuers: [{name: i, keys: [{path: i.pem}]}]\n"
    )
    verified = CliRunner().invoke(main, ["verify", "--statement", str(path), "--trust", str(tmp_path / "p.yaml")])
    assert verified.exit_code == 1 and "not understood" in verified.output
    with pytest.raises(UnsupportedError, match="not understood"):
        statement.verify(statement.parse(path.read_bytes(), unknown_critical=True), keys=[signer])
