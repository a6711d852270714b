"""Verification against a trust policy: issuers, receipts from k distinct services, reasons, policy errors."""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from scitt_oci.cose import keys
from scitt_oci.errors import PolicyError
from scitt_oci.oci.reference import Reference
from scitt_oci.scitt import profile, transparent
from scitt_oci.scitt.statement import SignedStatement
from scitt_oci.verify.trust import load_policy
from scitt_oci.verify.verifier import verify_transparent_statement
from tests.helpers import MemoryLog, cert_chain, key

IMAGE = "sha256:" + "ab" * 32


def _write_policy(tmp_path: Path, doc: str) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(doc)
    return path


@dataclass
class Setup:
    logs: dict[str, MemoryLog]
    statement: SignedStatement
    dir: Path


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    """Two transparency services (keys as JWKS and COSE Key Set), one issuer (PEM), a push statement."""
    ts_a, ts_b, issuer = (
        MemoryLog(key(slot=5), issuer="https://a"),
        MemoryLog(key("ES384", slot=6), issuer="https://b"),
        key(slot=0),
    )
    (tmp_path / "a.jwks.json").write_text(json.dumps({"keys": [ts_a.signing_key.to_jwk()]}))
    (tmp_path / "b-keys.cbor").write_bytes(keys.dump_cose_key_set([ts_b.signing_key]))
    (tmp_path / "issuer.pem").write_bytes(issuer.public_pem())
    event = profile.make_event(profile.Kind.PUSH, Reference.parse(f"r.example/app@{IMAGE}"))
    s = profile.build(issuer, "https://wabbit.example", event, iat=1)
    return Setup({"a": ts_a, "b": ts_b}, s, tmp_path)


POLICY = """
transparency_services:
  - name: ts-a
    keys: [{path: a.jwks.json}]
  - name: ts-b
    keys: [{path: b-keys.cbor}]
issuers:
  - name: wabbit
    keys: [{path: issuer.pem}]
require:
  receipts: %d
"""


def _receipts(setup: Setup, *names: str) -> bytes:
    s = setup.statement
    out = []
    for n in names:
        log = setup.logs[n]
        out.append(log.receipt(log.add(s)))
    return transparent.add_receipts(s, out)


def test_valid_with_receipts_from_two_services(setup: Setup) -> None:
    policy = load_policy(_write_policy(setup.dir, POLICY % 2))
    result = verify_transparent_statement(_receipts(setup, "a", "b"), policy, digest=IMAGE)
    assert result.decision == "VALID", result.to_json()
    assert result.services == ["ts-a", "ts-b"] and result.trusted_issuer == "wabbit"
    assert result.event is not None and result.event.kind is profile.Kind.PUSH


def test_too_few_distinct_services(setup: Setup) -> None:
    policy = load_policy(_write_policy(setup.dir, POLICY % 2))
    result = verify_transparent_statement(_receipts(setup, "a", "a"), policy)
    assert result.reason_codes == ["TOO_FEW_RECEIPTS"]
    assert "1 trusted service(s) verify; the policy requires 2" in result.findings[0].message


def test_no_receipts_and_untrusted_service(setup: Setup, tmp_path: Path) -> None:
    policy = load_policy(_write_policy(tmp_path, POLICY % 1))
    s = setup.statement
    assert verify_transparent_statement(s.encode(), policy).reason_codes == ["NO_RECEIPTS"]
    rogue = MemoryLog(key(slot=7))
    ts = transparent.add_receipts(s, [rogue.receipt(rogue.add(s))])
    assert verify_transparent_statement(ts, policy).reason_codes == ["UNKNOWN_RECEIPT_KEY"]


def test_untrusted_issuer_and_subject_mismatch(setup: Setup, tmp_path: Path) -> None:
    (tmp_path / "issuer.pem").write_bytes(key(slot=3).public_pem())
    policy = load_policy(_write_policy(tmp_path, POLICY % 1))
    result = verify_transparent_statement(_receipts(setup, "a"), policy, digest="sha256:" + "00" * 32)
    assert result.reason_codes == ["SUBJECT_MISMATCH", "UNTRUSTED_ISSUER"]


def test_issuer_by_x509_root_and_without_issuers_section(tmp_path: Path) -> None:
    leaf_key = ec.generate_private_key(ec.SECP256R1())
    chain, root = cert_chain(leaf_key)
    (tmp_path / "roots.pem").write_bytes(root.public_bytes(serialization.Encoding.PEM))
    log = MemoryLog(key(slot=5), iat=None)  # no signed time: the chain is checked at the verification time
    (tmp_path / "ts.pem").write_bytes(log.signing_key.public_pem())
    from scitt_oci.scitt import did_x509, statement

    did = did_x509.create(root, subject=[("CN", "Wabbit Networks signing")])
    s = statement.build(
        keys.CoseKey.from_key(leaf_key),
        issuer=did,
        subject="urn:x",
        payload=b"p",
        x5chain=[c.public_bytes(serialization.Encoding.DER) for c in chain],
    )
    ts = transparent.add_receipts(s, [log.receipt(log.add(s))])
    with_roots = _write_policy(
        tmp_path,
        "transparency_services: [{name: t, keys: [{path: ts.pem}]}]\n"
        f"issuers: [{{name: w, x509_roots: [{{path: roots.pem}}], iss: '{did}'}}]\n",
    )
    result = verify_transparent_statement(ts, load_policy(with_roots))
    assert result.valid, result.to_json()
    assert result.to_json()["statement"]["certificate_checked_at"]["source"] == "verification time"
    open_policy = _write_policy(tmp_path, "transparency_services: [{name: t, keys: [{path: ts.pem}]}]\n")
    # Without roots, a did:x509 resolves against the chain alone (its last certificate the anchor):
    # the root it pins is not in this chain, so the claim cannot be proven.
    unproven = verify_transparent_statement(ts, load_policy(open_policy))
    assert (
        unproven.reason_codes == ["UNTRUSTED_ISSUER"]
        and "no CA certificate in the chain" in unproven.findings[0].message
    )
    by_intermediate = did_x509.create(chain[1], subject=[("CN", "Wabbit Networks signing")])
    s2 = statement.build(
        keys.CoseKey.from_key(leaf_key),
        issuer=by_intermediate,
        subject="urn:x",
        payload=b"p",
        x5chain=[c.public_bytes(serialization.Encoding.DER) for c in chain],
    )
    assert verify_transparent_statement(
        transparent.add_receipts(s2, [log.receipt(log.add(s2))]), load_policy(open_policy)
    ).valid
    other = did_x509.create(root, subject=[("CN", "Someone else")])
    wrong_iss = _write_policy(
        tmp_path,
        "transparency_services: [{name: t, keys: [{path: ts.pem}]}]\n"
        f"issuers: [{{name: w, x509_roots: [{{path: roots.pem}}], iss: '{other}'}}]\n",
    )
    assert verify_transparent_statement(ts, load_policy(wrong_iss)).reason_codes == ["UNTRUSTED_ISSUER"]


def test_malformed_statement_is_one_clear_reason(tmp_path: Path) -> None:
    (tmp_path / "ts.pem").write_bytes(key().public_pem())
    policy = load_policy(_write_policy(tmp_path, "transparency_services: [{name: t, keys: [{path: ts.pem}]}]\n"))
    result = verify_transparent_statement(b"\xd2\x84garbage", policy)
    assert result.reason_codes == ["MALFORMED"] and "cannot be read" in result.findings[0].message


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ("transparency_services: []\n", "at least one service"),
        ("transparency_servics: []\n", "unknown key\\(s\\) 'transparency_servics'"),
        ("transparency_services: [{name: t, keys: [{path: missing.pem}]}]\n", "cannot read .*missing.pem"),
        (
            "transparency_services: [{name: t, keys: [{path: ts.pem}]}]\nrequire: {receipts: 2}\n",
            "from 1 to the number of services \\(1\\)",
        ),
        (
            "transparency_services: [{name: t, keys: [{path: ts.pem}], extra: 1}]\n",
            "transparency_services\\[0\\]: unknown key",
        ),
        (
            "transparency_services: [{name: t, keys: [{path: ts.pem}]}]\nissuers: [{name: i}]\n",
            "needs keys, x509_roots, or both",
        ),
        ("- just\n- a list\n", "expected a mapping"),
        ("key: [unclosed\n", "not valid YAML"),
    ],
)
def test_policy_errors_name_the_problem(tmp_path: Path, doc: str, message: str) -> None:
    (tmp_path / "ts.pem").write_bytes(key().public_pem())
    with pytest.raises(PolicyError, match=message):
        load_policy(_write_policy(tmp_path, doc))


def test_policy_digest_changes_when_a_key_file_changes(tmp_path: Path) -> None:
    (tmp_path / "ts.pem").write_bytes(key().public_pem())
    path = _write_policy(tmp_path, "transparency_services: [{name: t, keys: [{path: ts.pem}]}]\n")
    first = load_policy(path).digest
    assert load_policy(path).digest == first
    (tmp_path / "ts.pem").write_bytes(key(slot=1).public_pem())
    assert load_policy(path).digest != first


def test_a_policy_or_key_file_that_is_a_fifo_or_a_device_is_refused_at_once(tmp_path: Path) -> None:
    """An operator's path naming a FIFO (opening it would wait for a writer) or /dev/zero (endless) is an
    error naming the setting, given at once."""
    fifo = tmp_path / "policy.yaml"
    os.mkfifo(fifo)
    device = tmp_path / "device.yaml"
    device.write_text("transparency_services: [{name: local, keys: [{path: /dev/zero}]}]\n")
    errors: list[str] = []

    def load_both() -> None:
        for path in (fifo, device):
            with pytest.raises(PolicyError) as caught:
                load_policy(path)
            errors.append(str(caught.value))

    reader = threading.Thread(target=load_both, daemon=True)
    reader.start()
    reader.join(10)
    assert not reader.is_alive(), "reading a FIFO or a device blocked"
    assert errors[0] == f"trust policy: cannot read {fifo}: not a regular file"
    assert errors[1].endswith("cannot read /dev/zero: not a regular file"), errors[1]
