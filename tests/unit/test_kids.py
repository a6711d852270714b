"""Key ids as other SCITT implementations write them, matched the same way in statements and receipts:
text kids (UTF-8 in a bstr: pyscitt, scitt-cose, transmute), hex and raw thumbprints; a kid that is not
a bstr is malformed (RFC 9052), never "absent"."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scitt_oci.cose import keys, sign1
from scitt_oci.cose.keys import CoseKey
from scitt_oci.errors import MalformedError
from scitt_oci.log.policy import RegistrationPolicy, Rejection
from scitt_oci.scitt import receipt, statement, transparent
from scitt_oci.scitt.reasons import Reason, VerificationFailure
from scitt_oci.scitt.statement import SignedStatement
from scitt_oci.verify.trust import load_policy
from scitt_oci.verify.verifier import verify_transparent_statement
from tests.helpers import MemoryLog, key, private

ISS, SUB = "https://wabbit-networks.example", "urn:example:app"


def _statement(signer: CoseKey, kid: object) -> SignedStatement:
    return statement.build(signer, issuer=ISS, subject=SUB, payload=b"p", extra_protected={4: kid})


def _forms(k: CoseKey) -> dict[str, bytes]:
    thumb = keys.thumbprint(k.public)
    return {
        "raw thumbprint": thumb,
        "hex thumbprint": thumb.hex().encode(),
        "upper-case hex thumbprint": thumb.hex().upper().encode(),
        "base64url thumbprint": keys._b64u(thumb).encode(),
    }


@pytest.mark.parametrize(
    "form", ["raw thumbprint", "hex thumbprint", "upper-case hex thumbprint", "base64url thumbprint"]
)
def test_thumbprint_kids_in_every_form_name_the_key_in_statements_and_receipts(form: str) -> None:
    issuer, ts = key(slot=0), key(slot=5)
    kid = _forms(issuer)[form]
    s = _statement(issuer, kid)
    assert statement.verify(s, keys=[issuer]).key is issuer
    log = MemoryLog(CoseKey.from_key(private(ts), kid=_forms(ts)[form]))
    verified = receipt.verify_receipt(log.receipt(log.add(s)), s, [ts])
    assert verified.key is ts


def test_a_text_kid_from_a_jwk_names_the_key_in_statements_and_receipts(tmp_path: Path) -> None:
    """pyscitt and transmute put the key's text id into COSE kid as UTF-8 bytes; the JWK names it."""
    issuer, ts = key(slot=0), key(slot=5)
    for k, name, kid in ((issuer, "issuer", "wabbit-release-2026"), (ts, "ts", "#scitt-ts-key-1")):
        jwk = {**k.to_jwk(), "kid": kid}
        (tmp_path / f"{name}.jwks.json").write_text(json.dumps({"keys": [jwk]}))
    s = _statement(issuer, b"wabbit-release-2026")
    log = MemoryLog(CoseKey.from_key(private(ts), kid=b"#scitt-ts-key-1"))
    (tmp_path / "p.yaml").write_text(
        "transparency_services: [{name: ts, keys: [{path: ts.jwks.json}]}]\n"
        "issuers: [{name: wabbit, keys: [{path: issuer.jwks.json}]}]\n"
    )
    result = verify_transparent_statement(
        transparent.add_receipts(s, [log.receipt(log.add(s))]), load_policy(tmp_path / "p.yaml")
    )
    assert result.valid, result.to_json()
    assert result.trusted_issuer == "wabbit" and result.services == ["ts"]


def test_a_policy_gives_a_pem_key_its_text_kid(tmp_path: Path) -> None:
    issuer, ts = key(slot=0), key(slot=5)
    (tmp_path / "issuer.pem").write_bytes(issuer.public_pem())
    (tmp_path / "ts.pem").write_bytes(ts.public_pem())
    s = _statement(issuer, b"did:web:wabbit.example#key-1")
    log = MemoryLog(CoseKey.from_key(private(ts), kid=b"ts-2026"))
    ts_bytes = transparent.add_receipts(s, [log.receipt(log.add(s))])
    (tmp_path / "p.yaml").write_text(
        "transparency_services: [{name: ts, keys: [{path: ts.pem, kid: ts-2026}]}]\n"
        "issuers: [{name: wabbit, keys: [{path: issuer.pem, kid: 'did:web:wabbit.example#key-1'}]}]\n"
    )
    assert verify_transparent_statement(ts_bytes, load_policy(tmp_path / "p.yaml")).valid
    (tmp_path / "p.yaml").write_text(
        "transparency_services: [{name: ts, keys: [{path: ts.pem, kid: ts-2026}]}]\n"
        "issuers: [{name: wabbit, keys: [{path: issuer.pem}]}]\n"
    )
    unnamed = verify_transparent_statement(ts_bytes, load_policy(tmp_path / "p.yaml"))
    assert unnamed.reason_codes == ["UNTRUSTED_ISSUER"]
    message = unnamed.findings[0].message
    assert "statement kid 'did:web:wabbit.example#key-1' is not among the trusted issuer keys" in message
    assert "as raw bytes, hex text or base64url text" in message and "RFC 9052: kid is bstr" in message


@pytest.mark.parametrize(("kid", "kind"), [("wabbit-release-2026", "a text string"), (7, "an integer")])
def test_a_kid_that_is_not_a_bstr_is_malformed_in_statements_and_receipts(
    kid: object, kind: str, tmp_path: Path
) -> None:
    issuer, ts = key(slot=0), key(slot=5)
    assert issuer.alg is not None
    message = sign1.sign(issuer, {1: issuer.alg.cose_id, 4: kid, 15: {1: ISS, 2: SUB}}, b"p")
    data = message.encode()
    rule = f"kid \\(4\\) must be a byte string \\(RFC 9052: kid is bstr\\), not {kind}"
    with pytest.raises(MalformedError, match=rule):
        statement.parse(data)
    # A verifier says MALFORMED (it used to ignore the kid and try every trusted key).
    (tmp_path / "issuer.pem").write_bytes(issuer.public_pem())
    (tmp_path / "ts.pem").write_bytes(ts.public_pem())
    (tmp_path / "p.yaml").write_text(
        "transparency_services: [{name: ts, keys: [{path: ts.pem}]}]\nissuers: [{name: w, keys: [{path: issuer.pem}]}]\n"
    )
    result = verify_transparent_statement(data, load_policy(tmp_path / "p.yaml"))
    assert result.reason_codes == ["MALFORMED"] and "RFC 9052: kid is bstr" in result.findings[0].message
    with pytest.raises(Rejection, match="RFC 9052: kid is bstr") as info:
        RegistrationPolicy.build(issuer_keys=[issuer]).check(data)
    assert info.value.title == "Malformed request"
    # The same rule for a receipt's kid.
    good = _statement(issuer, issuer.kid)
    log = MemoryLog(CoseKey.from_key(private(ts), kid=kid))  # type: ignore[arg-type]  # a kid that is no bstr, on purpose
    with pytest.raises(VerificationFailure, match=rule) as failure:
        receipt.verify_receipt(log.receipt(log.add(good)), good, [ts])
    assert failure.value.reason is Reason.MALFORMED


def test_an_unknown_receipt_kid_names_the_accepted_forms() -> None:
    s = _statement(key(slot=0), key(slot=0).kid)
    log = MemoryLog(CoseKey.from_key(private(key(slot=7)), kid=b"rogue-ts"))
    with pytest.raises(VerificationFailure, match="receipt kid 'rogue-ts' is not a trusted service key") as info:
        receipt.verify_receipt(log.receipt(log.add(s)), s, [key(slot=5)])
    assert info.value.reason is Reason.UNKNOWN_RECEIPT_KEY and "hex text or base64url text" in info.value.message


def test_scitt_cose_text_kids_in_statement_and_receipt(tmp_path: Path) -> None:
    """An independent implementation (scitt-cose) writes text kids as UTF-8 bytes in both headers."""
    import hashlib

    import scitt_cose

    issuer, ts = key(slot=0), key(slot=5)
    theirs = scitt_cose.build_signed_statement(
        b"{}",
        alg="ES256",
        private_key_pem=issuer.private_pem(),
        issuer=ISS,
        subject=SUB,
        content_type="application/json",
        kid=b"wabbit/release-2026",
    )
    leaves = [hashlib.sha256(theirs).hexdigest(), hashlib.sha256(b"other").hexdigest()]
    r = scitt_cose.build_receipt(
        leaf_entry_hex=leaves[0],
        leaf_index=0,
        tree_entries_hex=leaves,
        alg="ES256",
        log_private_key_pem=ts.private_pem(),
        kid=b"log-key-1",
        iss="https://ts.example",
        sub=SUB,
        iat=1_780_000_000,
    )
    (tmp_path / "issuer.pem").write_bytes(issuer.public_pem())
    (tmp_path / "ts.pem").write_bytes(ts.public_pem())
    (tmp_path / "p.yaml").write_text(
        "transparency_services: [{name: ts, keys: [{path: ts.pem, kid: log-key-1}]}]\n"
        "issuers: [{name: wabbit, keys: [{path: issuer.pem, kid: wabbit/release-2026}]}]\n"
    )
    result = verify_transparent_statement(theirs, load_policy(tmp_path / "p.yaml"), detached_receipts=[r])
    assert result.valid, result.to_json()
    assert result.receipts[0].entry_rule == "hash-first" and result.receipts[0].signed_at == 1_780_000_000
