"""X.509-signed statements: the time a chain is judged at, which header a chain counts in, how iss is
bound to the certificate (certificate rules and did:x509), and Ed25519 chains. At registration and
at verification."""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from scitt_oci.cose import keys
from scitt_oci.errors import MalformedError, PolicyError, UntrustedKeyError
from scitt_oci.log.policy import RegistrationPolicy, Rejection
from scitt_oci.scitt import did_x509, statement, transparent, x509chain
from scitt_oci.scitt.statement import SignedStatement
from scitt_oci.scitt.x509chain import CertificateRule, IssuerBinding
from scitt_oci.verify.trust import load_policy
from scitt_oci.verify.verifier import VerificationResult, verify_transparent_statement
from tests.conftest import shared
from tests.helpers import MemoryLog, key

NOW = dt.datetime.now(dt.UTC)
DAY = dt.timedelta(days=1)
SUB = "oci://registry.example/app@sha256:" + "ab" * 32
CODE_SIGNING = ExtendedKeyUsageOID.CODE_SIGNING.dotted_string

PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey


def _sign(builder: x509.CertificateBuilder, signer: PrivateKey) -> x509.Certificate:
    return builder.sign(signer, None if isinstance(signer, ed25519.Ed25519PrivateKey) else hashes.SHA256())


@dataclass
class Pki:
    """A root and an intermediate that issue code-signing leaves."""

    ca_kind: str = "ec"
    root_key: PrivateKey = field(init=False)
    inter_key: PrivateKey = field(init=False)
    root: x509.Certificate = field(init=False)
    inter: x509.Certificate = field(init=False)

    def __post_init__(self) -> None:
        def new() -> PrivateKey:
            return (
                ed25519.Ed25519PrivateKey.generate()
                if self.ca_kind == "ed25519"
                else ec.generate_private_key(ec.SECP256R1())
            )

        self.root_key, self.inter_key = new(), new()
        self.root = self._ca("Test Root", self.root_key, self.root_key, "Test Root")
        self.inter = self._ca("Test Intermediate", self.inter_key, self.root_key, "Test Root")

    @staticmethod
    def _base(
        subject: x509.Name, issuer: str, public: Any, start: dt.datetime, end: dt.datetime
    ) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        )

    def _ca(self, cn: str, own: PrivateKey, signer: PrivateKey, issuer: str) -> x509.Certificate:
        b = self._base(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]),
            issuer,
            own.public_key(),
            NOW - 3000 * DAY,
            NOW + 3000 * DAY,
        )
        b = b.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        b = b.add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), critical=False)
        return _sign(b, signer)

    def leaf(
        self,
        public: Any,
        *,
        cn: str = "Wabbit Networks release signing",
        org: str = "Wabbit Networks",
        email: str | None = None,
        start: dt.datetime = NOW - DAY,
        end: dt.datetime = NOW + 30 * DAY,
    ) -> list[x509.Certificate]:
        name = x509.Name(
            [x509.NameAttribute(NameOID.COMMON_NAME, cn), x509.NameAttribute(NameOID.ORGANIZATION_NAME, org)]
        )
        b = self._base(name, "Test Intermediate", public, start, end)
        b = b.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        b = b.add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
        b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
        b = b.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(self.inter_key.public_key()), critical=False
        )
        if email:
            b = b.add_extension(x509.SubjectAlternativeName([x509.RFC822Name(email)]), critical=False)
        return [_sign(b, self.inter_key), self.inter]


def _ders(chain: list[x509.Certificate]) -> list[bytes]:
    return [c.public_bytes(serialization.Encoding.DER) for c in chain]


def _signed(
    signer: PrivateKey,
    chain: list[x509.Certificate],
    *,
    iss: str = "https://wabbit-networks.example",
    iat: dt.datetime | None = None,
    where: str = "protected",
) -> SignedStatement:
    """A statement signed by `signer` carrying `chain`: in the protected header, in the unprotected one
    alone ("unprotected"), or there with its leaf pinned by a protected x5t ("x5t")."""
    cose_key = keys.CoseKey.from_key(signer)
    stamp = int(iat.timestamp()) if iat else None
    if where == "protected":
        return statement.build(cose_key, issuer=iss, subject=SUB, payload=b"p", x5chain=_ders(chain), iat=stamp)
    extra = {34: [-16, hashlib.sha256(_ders(chain)[0]).digest()]} if where == "x5t" else None
    s = statement.build(cose_key, issuer=iss, subject=SUB, payload=b"p", iat=stamp, extra_protected=extra)
    return with_unprotected_chain(s, chain)


def with_unprotected_chain(s: SignedStatement, chain: list[x509.Certificate]) -> SignedStatement:
    return statement.from_message(s.message.with_unprotected({33: _ders(chain)}))


def _policy(tmp_path: Path, pki: Pki, log: MemoryLog, issuer: str) -> Path:
    (tmp_path / "roots.pem").write_bytes(pki.root.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "ts.pem").write_bytes(log.signing_key.public_pem())
    path = tmp_path / "policy.yaml"
    path.write_text(
        "transparency_services: [{name: ts, keys: [{path: ts.pem}]}]\n"
        f"issuers:\n  - {{name: wabbit, x509_roots: [{{path: roots.pem}}]{issuer}}}\n"
    )
    return path


def _verify(
    s: SignedStatement, log: MemoryLog, policy: Path, receipt_of: SignedStatement | None = None
) -> VerificationResult:
    """Register `receipt_of` (default `s`) in `log`, then verify `s` carrying that receipt."""
    registered = receipt_of or s
    r = log.receipt(log.add(registered))
    return verify_transparent_statement(transparent.add_receipts(s, [r]), load_policy(policy))


RULE = (
    ", iss: https://wabbit-networks.example, certificate: {subject: {O: Wabbit Networks}, eku: [" + CODE_SIGNING + "]}"
)


# ----- 1. the time a chain is judged at -----


def test_backdated_iat_does_not_revive_an_expired_certificate(tmp_path: Path) -> None:
    """The issue's case: a leaf that expired 700 days ago signs today with iat 800 days back."""
    pki, signer = Pki(), ec.generate_private_key(ec.SECP256R1())
    chain = pki.leaf(signer.public_key(), start=NOW - 900 * DAY, end=NOW - 700 * DAY)
    s = _signed(signer, chain, iat=NOW - 800 * DAY)
    registered_today = MemoryLog(key(slot=5), iat=int(NOW.timestamp()))
    result = _verify(s, registered_today, _policy(tmp_path, pki, registered_today, RULE))
    assert result.reason_codes == ["UNTRUSTED_ISSUER"], result.to_json()
    assert "not valid at validation time" in result.findings[0].message
    # The service at registration judges by its own clock, not the iat.
    with pytest.raises(Rejection, match="does not chain to a trusted root at"):
        RegistrationPolicy.build(x509_roots=[pki.root], x509_issuers=[_binding()]).check(s.encode())


def _binding() -> IssuerBinding:
    return IssuerBinding(
        "https://wabbit-networks.example", CertificateRule((("O", "Wabbit Networks"),), (), (CODE_SIGNING,))
    )


def test_a_receipt_proves_registration_while_the_certificate_was_valid(tmp_path: Path) -> None:
    """Registered 750 days ago (the receipt's signed iat), the leaf expired 700 days ago: still valid today."""
    pki, signer = Pki(), ec.generate_private_key(ec.SECP256R1())
    chain = pki.leaf(signer.public_key(), start=NOW - 900 * DAY, end=NOW - 700 * DAY)
    s = _signed(signer, chain, iat=NOW - 750 * DAY)
    then = NOW - 750 * DAY
    log = MemoryLog(key(slot=5), iat=int(then.timestamp()))
    policy = _policy(tmp_path, pki, log, RULE)
    assert RegistrationPolicy.build(x509_roots=[pki.root], x509_issuers=[_binding()]).check(s.encode(), now=then)
    result = _verify(s, log, policy)
    assert result.valid, result.to_json()
    checked = result.to_json()["statement"]["certificate_checked_at"]
    assert checked == {"time": then.strftime("%Y-%m-%dT%H:%M:%SZ"), "source": "receipt iat (ts)"}
    # A receipt with no signed time proves none: the chain is then judged now, and has expired.
    timeless = MemoryLog(key(slot=5), iat=None)
    assert _verify(s, timeless, policy).reason_codes == ["UNTRUSTED_ISSUER"]


def test_with_two_required_receipts_one_service_cannot_backdate_the_chain_check(tmp_path: Path) -> None:
    """A leaf that expired 700 days ago; the honest service registered it today, a second trusted service
    claims 750 days ago. With `receipts: 2` the time both vouch for is today: the chain is expired."""
    pki, signer = Pki(), ec.generate_private_key(ec.SECP256R1())
    chain = pki.leaf(signer.public_key(), start=NOW - 900 * DAY, end=NOW - 700 * DAY)
    s = _signed(signer, chain)
    honest = MemoryLog(key(slot=5), iat=int(NOW.timestamp()))
    backdating = MemoryLog(key(slot=6), iat=int((NOW - 750 * DAY).timestamp()))
    (tmp_path / "roots.pem").write_bytes(pki.root.public_bytes(serialization.Encoding.PEM))
    for name, log in (("honest", honest), ("backdating", backdating)):
        (tmp_path / f"{name}.pem").write_bytes(log.signing_key.public_pem())
    receipts = [log.receipt(log.add(s)) for log in (honest, backdating)]

    def verify(required: int) -> VerificationResult:
        (tmp_path / "p.yaml").write_text(
            "transparency_services: [{name: honest, keys: [{path: honest.pem}]}, {name: backdating, keys: [{path: backdating.pem}]}]\n"
            f"issuers:\n  - {{name: wabbit, x509_roots: [{{path: roots.pem}}]{RULE}}}\n"
            f"require: {{receipts: {required}}}\n"
        )
        return verify_transparent_statement(transparent.add_receipts(s, receipts), load_policy(tmp_path / "p.yaml"))

    both = verify(2)
    assert both.reason_codes == ["UNTRUSTED_ISSUER"], both.to_json()
    assert "not valid at validation time" in both.findings[0].message
    # With one receipt required, the earliest trusted service's time counts, as documented.
    assert verify(1).valid


def test_the_ccf_vector_is_judged_at_its_receipt_time(tmp_path: Path) -> None:
    """Real data: pyscitt's did:x509 statement, whose certificates (10-day validity) expired on 2026-07-06,
    with scitt-ccf-ledger's receipt signed on 2026-06-26: valid against its own root at the receipt's time."""
    vector = shared("scitt-cose-vectors", "v1", "valid-ccf-vds2")
    raw = (vector / "statement.cose").read_bytes()
    chain = x509chain.chain_of(statement.parse(raw).message.protected, {})
    assert chain[-1].not_valid_after_utc < NOW
    (tmp_path / "root.pem").write_bytes(chain[-1].public_bytes(serialization.Encoding.PEM))
    (tmp_path / "p.yaml").write_text(
        f"transparency_services: [{{name: ccf, keys: [{{path: {vector / 'log-key.pub'}}}]}}]\n"
        "issuers: [{name: ccf-issuer, x509_roots: [{path: root.pem}]}]\n"
    )
    result = verify_transparent_statement(
        raw, load_policy(tmp_path / "p.yaml"), detached_receipts=[(vector / "receipt.cose").read_bytes()]
    )
    assert result.valid, result.to_json()
    assert result.issuer_binding == "did:x509"
    assert result.to_json()["statement"]["certificate_checked_at"]["time"].startswith("2026-06-26")


# ----- 2. only the protected header identifies the issuer -----


def test_a_certificate_that_does_not_parse_is_named_by_its_place_in_the_chain() -> None:
    """A client learns which certificate is bad, not the X.509 parser's internal state."""
    vector = shared("scitt-cose-vectors", "v1", "valid-ccf-vds2")
    good = x509chain.chain_of(statement.parse((vector / "statement.cose").read_bytes()).message.protected, {})[0]
    der = good.public_bytes(serialization.Encoding.DER)
    with pytest.raises(MalformedError) as bad:
        x509chain.chain_of({33: [der, b"\x30\x03\x02\x01\x05"]}, {})
    assert str(bad.value) == ("x5chain (33) certificate 2 of 2 (5 bytes) is not a DER-encoded X.509 certificate")


def test_an_unprotected_chain_is_not_honoured(tmp_path: Path) -> None:
    """A chain only in the unprotected header can be swapped after registration (the log strips it):
    swapped for another certificate of the same key, it verified before."""
    pki, signer = Pki(), ec.generate_private_key(ec.SECP256R1())
    mallory = pki.leaf(signer.public_key(), cn="Mallory", org="Mallory Inc")
    wabbit = pki.leaf(signer.public_key())
    registered = _signed(signer, mallory, where="unprotected")
    swapped = with_unprotected_chain(registered, wabbit)
    log = MemoryLog(key(slot=5), iat=None)
    result = _verify(swapped, log, _policy(tmp_path, pki, log, RULE), receipt_of=registered)
    assert result.receipts[0].valid  # the receipt still holds: the unprotected header is not in the entry
    assert result.reason_codes == ["UNTRUSTED_ISSUER"], result.to_json()
    assert "unprotected header, which the signature does not cover" in result.findings[0].message
    with pytest.raises(Rejection, match="unprotected header"):
        RegistrationPolicy.build(x509_roots=[pki.root], x509_issuers=[_binding()]).check(registered.encode())


def test_an_unprotected_chain_pinned_by_a_protected_x5t_counts(tmp_path: Path) -> None:
    pki, signer = Pki(), ec.generate_private_key(ec.SECP256R1())
    wabbit = pki.leaf(signer.public_key())
    s = _signed(signer, wabbit, where="x5t")
    log = MemoryLog(key(slot=5), iat=None)
    policy = _policy(tmp_path, pki, log, RULE)
    assert _verify(s, log, policy).valid
    other = with_unprotected_chain(s, pki.leaf(signer.public_key(), cn="Another"))
    assert _verify(other, log, policy, receipt_of=s).reason_codes == ["BAD_STATEMENT_SIGNATURE"]


# ----- 3. iss bound to the certificate -----


def test_any_certificate_under_the_root_cannot_claim_any_issuer(tmp_path: Path) -> None:
    pki, signer = Pki(), ec.generate_private_key(ec.SECP256R1())
    mallory = _signed(signer, pki.leaf(signer.public_key(), cn="Mallory", org="Mallory Inc"))
    wabbit = _signed(signer, pki.leaf(signer.public_key()))
    log = MemoryLog(key(slot=5), iat=None)
    # An entry with roots and no binding: only a did:x509 iss the chain proves is accepted.
    unbound = _verify(mallory, log, _policy(tmp_path, pki, log, ""))
    assert unbound.reason_codes == ["UNTRUSTED_ISSUER"]
    assert "is not a did:x509 identifier its certificate proves" in unbound.findings[0].message
    # With certificate rules, the leaf must show them.
    bound = _policy(tmp_path, pki, log, RULE)
    assert _verify(wabbit, log, bound).valid
    wrong = _verify(mallory, log, bound)
    assert (
        wrong.reason_codes == ["UNTRUSTED_ISSUER"]
        and "subject O is 'Mallory Inc', not 'Wabbit Networks'" in wrong.findings[0].message
    )
    # A plain iss with roots and no rule is refused when the policy is loaded.
    with pytest.raises(PolicyError, match="not bound to the certificates under x509_roots"):
        load_policy(_policy(tmp_path, pki, log, ", iss: https://wabbit-networks.example"))
    # At registration: x509_issuers binds the iss; otherwise only a did:x509 it proves is accepted.
    reg = RegistrationPolicy.build(x509_roots=[pki.root], x509_issuers=[_binding()])
    assert reg.check(wabbit.encode())
    with pytest.raises(Rejection, match="does not match the issuer's rule: subject O is 'Mallory Inc'"):
        reg.check(mallory.encode())
    with pytest.raises(Rejection, match="is not bound to certificate"):
        RegistrationPolicy.build(x509_roots=[pki.root]).check(wabbit.encode())


def test_did_x509_issuers(tmp_path: Path) -> None:
    pki, signer = Pki(), ec.generate_private_key(ec.SECP256R1())
    chain = pki.leaf(signer.public_key(), email="release@wabbit.example")
    did = did_x509.create(pki.root, subject=[("O", "Wabbit Networks")], eku=[CODE_SIGNING])
    by_san = did_x509.create(pki.inter, san=("email", "release@wabbit.example"))
    claims_other = did_x509.create(pki.root, subject=[("O", "Acme Rockets")])
    log = MemoryLog(key(slot=5), iat=None)
    self_describing = _policy(tmp_path, pki, log, "")  # roots, no iss: the statement's did:x509 must hold
    for good in (did, by_san):
        result = _verify(_signed(signer, chain, iss=good), log, self_describing)
        assert result.valid and result.issuer_binding == "did:x509", result.to_json()
    lie = _verify(_signed(signer, chain, iss=claims_other), log, self_describing)
    assert (
        lie.reason_codes == ["UNTRUSTED_ISSUER"]
        and "does not satisfy subject: O is 'Wabbit Networks'" in lie.findings[0].message
    )
    pinned = _policy(tmp_path, pki, log, f", iss: '{did}'")
    assert _verify(_signed(signer, chain, iss=did), log, pinned).valid
    assert _verify(_signed(signer, chain, iss=by_san), log, pinned).reason_codes == ["UNTRUSTED_ISSUER"]
    reg = RegistrationPolicy.build(x509_roots=[pki.root])
    assert reg.check(_signed(signer, chain, iss=did).encode())
    with pytest.raises(Rejection, match="does not satisfy subject"):
        reg.check(_signed(signer, chain, iss=claims_other).encode())
    with pytest.raises(PolicyError, match=r"issuers\[0\].iss: .*version '9'"):
        load_policy(_policy(tmp_path, pki, log, ", iss: 'did:x509:9:sha256:AAAA::eku:1.2'"))


@pytest.mark.parametrize(
    ("did", "message"),
    [
        ("did:x509:0:sha256:WE4P5dd8DnLHSkyHaIjhp4udlkF9LqoKwCvu9gl38jk", "at least one predicate"),
        ("did:x509:0:md5:WE4P5dd8DnLHSkyHaIjhp4udlkF9LqoKwCvu9gl38jk::eku:1.2", "'md5' is not one of"),
        ("did:x509:0:sha256:WE4P5dd8DnLHSkyHaIjhp4udlkF9LqoKwCvu9gl38j::eku:1.2", "canonical sha256 digest"),
        ("did:x509:0:sha256:WE4P5dd8DnLHSkyHaIjhp4udlkF9LqoKwCvu9gl38jk::subject:CN", "key:value pairs"),
        ("did:x509:0:sha256:WE4P5dd8DnLHSkyHaIjhp4udlkF9LqoKwCvu9gl38jk::subject:CN:a:CN:b", "repeats a key"),
        ("did:x509:0:sha256:WE4P5dd8DnLHSkyHaIjhp4udlkF9LqoKwCvu9gl38jk::san:dn:x", "must be <email|dns|uri>"),
        ("did:x509:0:sha256:WE4P5dd8DnLHSkyHaIjhp4udlkF9LqoKwCvu9gl38jk::eku:code", "dotted OID"),
        ("did:x509:0:sha256:WE4P5dd8DnLHSkyHaIjhp4udlkF9LqoKwCvu9gl38jk::subject:CN:a b", "outside idchar"),
        ("did:x509:0:sha256:WE4P5dd8DnLHSkyHaIjhp4udlkF9LqoKwCvu9gl38jk::subject:CN:%zz", "outside idchar"),
        ("did:x509:0:sha256:WE4P5dd8DnLHSkyHaIjhp4udlkF9LqoKwCvu9gl38jk::issuer:CN:x", "is not one of subject"),
    ],
)
def test_did_x509_syntax_errors_name_the_rule(did: str, message: str) -> None:
    with pytest.raises(Exception, match=message):
        did_x509.parse(did)


def test_did_x509_spec_example_parses_and_percent_decodes() -> None:
    example = "did:x509:0:sha256:WE4P5dd8DnLHSkyHaIjhp4udlkF9LqoKwCvu9gl38jk::subject:C:US:ST:California:O:Example%20Organisation"
    parsed = did_x509.parse(example)
    assert parsed.fingerprint_alg == "sha256" and len(parsed.fingerprint) == 32
    assert parsed.predicates == (("subject", "C:US:ST:California:O:Example%20Organisation"),)
    assert did_x509.pct_decode("Example%20Organisation", "v") == "Example Organisation"
    assert did_x509.pct_encode("bob@example.com") == "bob%40example.com"


# ----- 4. Ed25519 -----


def test_ed25519_chains_are_refused_with_a_reason_that_says_so(tmp_path: Path) -> None:
    pki, signer = Pki(ca_kind="ed25519"), ed25519.Ed25519PrivateKey.generate()
    s = _signed(signer, pki.leaf(signer.public_key()))
    log = MemoryLog(key(slot=5), iat=None)
    result = _verify(s, log, _policy(tmp_path, pki, log, RULE))
    assert result.reason_codes == ["UNTRUSTED_ISSUER"]
    assert "Ed25519 and Ed448 CA certificates are not supported" in result.findings[0].message
    assert "Forbidden" not in result.findings[0].message
    with pytest.raises(Rejection, match="Ed25519 and Ed448 CA certificates are not supported"):
        RegistrationPolicy.build(x509_roots=[pki.root], x509_issuers=[_binding()]).check(s.encode())


def test_an_ed25519_leaf_key_under_an_ecdsa_ca_is_supported(tmp_path: Path) -> None:
    pki, signer = Pki(), ed25519.Ed25519PrivateKey.generate()
    s = _signed(signer, pki.leaf(signer.public_key()))
    assert s.message.alg.name == "EdDSA"
    log = MemoryLog(key(slot=5), iat=None)
    assert _verify(s, log, _policy(tmp_path, pki, log, RULE)).valid
    assert RegistrationPolicy.build(x509_roots=[pki.root], x509_issuers=[_binding()]).check(s.encode())


# ----- the configuration's x509_issuers -----


def test_registration_x509_issuers_in_the_configuration() -> None:
    from scitt_oci.config import X509IssuerConfig

    entry = X509IssuerConfig(
        iss="https://wabbit-networks.example", subject={"O": "Wabbit Networks"}, eku=[CODE_SIGNING]
    )
    assert entry.binding() == _binding()
    with pytest.raises(ValueError, match="names no subject, san or eku"):
        X509IssuerConfig(iss="https://wabbit-networks.example")
    with pytest.raises(ValueError, match="must be email:..., dns:... or uri:"):
        X509IssuerConfig(iss="x", san=["release@wabbit.example"])


def test_certificate_rule_errors_name_the_field(tmp_path: Path) -> None:
    pki, log = Pki(), MemoryLog(key(slot=5))
    for bad, message in [
        (", certificate: {subject: {XX: a}}", "'XX' is not CN"),
        (", certificate: {eku: [codeSigning]}", "dotted OIDs"),
        (", certificate: {subjects: {}}", "unknown key"),
    ]:
        with pytest.raises(PolicyError, match=r"issuers\[0\].certificate: .*" + message):
            load_policy(_policy(tmp_path, pki, log, bad))
    (tmp_path / "k.pem").write_bytes(key().public_pem())
    (tmp_path / "p.yaml").write_text(
        "transparency_services: [{name: ts, keys: [{path: k.pem}]}]\n"
        "issuers: [{name: i, keys: [{path: k.pem}], certificate: {eku: ['1.2']}}]\n"
    )
    with pytest.raises(PolicyError, match="certificate rules need x509_roots"):
        load_policy(tmp_path / "p.yaml")


def test_did_x509_resolution_rules_of_the_method() -> None:
    """The method's rules beyond path validation, each on its own (chains made here, validity aside)."""
    pki, signer = Pki(), ec.generate_private_key(ec.SECP256R1())
    leaf, inter = pki.leaf(signer.public_key(), email="release@wabbit.example")
    chain = [leaf, inter, pki.root]
    did = did_x509.create(pki.root, san=("email", "release@wabbit.example"))
    assert did_x509.resolve(did, chain, supplied=[leaf, inter]).predicates == (
        ("san", "email:release%40wabbit.example"),
    )
    # The chain as supplied must be the validated path: no unrelated certificates slipped in.
    with pytest.raises(UntrustedKeyError, match="not the validated path"):
        did_x509.resolve(did, chain, supplied=[leaf, Pki().root, inter])
    with pytest.raises(UntrustedKeyError, match="at least two certificates"):
        did_x509.resolve(did, [leaf])
    # A leaf fingerprint never satisfies the CA fingerprint.
    with pytest.raises(UntrustedKeyError, match="no CA certificate in the chain"):
        did_x509.resolve(did_x509.create(leaf, subject=[("CN", "Wabbit Networks release signing")]), chain)


def _leaf_with(
    pki: Pki, extension: x509.ExtensionType, critical: bool = False, usage: x509.KeyUsage | None = None
) -> x509.Certificate:
    public = ec.generate_private_key(ec.SECP256R1()).public_key()
    b = Pki._base(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Leaf")]), "Test Intermediate", public, NOW - DAY, NOW + DAY
    )
    b = b.add_extension(extension, critical=critical)
    if usage is not None:
        b = b.add_extension(usage, critical=True)
    return _sign(b, pki.inter_key)


def test_did_x509_leaf_rules() -> None:
    pki = Pki()
    did = did_x509.create(pki.root, subject=[("CN", "Leaf")])
    ip_san = _leaf_with(pki, x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]))
    with pytest.raises(UntrustedKeyError, match="IPAddress SAN, which did:x509's certificate model"):
        did_x509.resolve(did, [ip_san, pki.inter, pki.root])
    agreement_only = _leaf_with(
        pki,
        x509.BasicConstraints(ca=False, path_length=None),
        True,
        x509.KeyUsage(False, False, False, False, True, False, False, False, False),
    )
    with pytest.raises(UntrustedKeyError, match="does not allow digitalSignature"):
        did_x509.resolve(did, [agreement_only, pki.inter, pki.root])
    unknown_critical = _leaf_with(pki, x509.UnrecognizedExtension(x509.ObjectIdentifier("1.2.3.4"), b"\x05\x00"), True)
    with pytest.raises(UntrustedKeyError, match="critical extension 1.2.3.4"):
        did_x509.resolve(did, [unknown_critical, pki.inter, pki.root])


def test_did_x509_fulcio_issuer_predicate() -> None:
    pki = Pki()
    issuer_v2 = x509.UnrecognizedExtension(did_x509.FULCIO_ISSUER_V2, b"\x0c\x1bhttps://accounts.google.com")
    leaf = _leaf_with(pki, issuer_v2)
    chain = [leaf, pki.inter, pki.root]
    did = did_x509.create(pki.root, fulcio_issuer_url="https://accounts.google.com")
    assert did.endswith("::fulcio-issuer:accounts.google.com")
    did_x509.resolve(did, chain)
    with pytest.raises(
        UntrustedKeyError, match="Fulcio issuer is 'https://accounts.google.com', not 'https://token.actions"
    ):
        did_x509.resolve(
            did_x509.create(pki.root, fulcio_issuer_url="https://token.actions.githubusercontent.com"), chain
        )
    with pytest.raises(UntrustedKeyError, match="critical extension 1.3.6.1.4.1.57264.1.8"):
        did_x509.resolve(did, [_leaf_with(pki, issuer_v2, critical=True), pki.inter, pki.root])


def test_cli_makes_a_did_x509_and_an_x509_statement_that_verifies(tmp_path: Path) -> None:
    from click.testing import CliRunner, Result

    from scitt_oci.cli import formats as _formats  # registers the keys and statement commands
    from scitt_oci.cli import main

    assert _formats
    pki, signer = Pki(), ec.generate_private_key(ec.SECP256R1())
    chain = pki.leaf(signer.public_key())
    (tmp_path / "root.pem").write_bytes(pki.root.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "chain.pem").write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain))
    (tmp_path / "leaf-key.pem").write_bytes(keys.CoseKey.from_key(signer).private_pem())
    runner = CliRunner()
    made = runner.invoke(
        main,
        [
            "keys",
            "did-x509",
            str(tmp_path / "root.pem"),
            "--subject",
            "O=Wabbit Networks",
            "--eku",
            CODE_SIGNING,
            "--check",
            str(tmp_path / "chain.pem"),
        ],
    )
    assert made.exit_code == 0, made.output
    did = made.output.strip()
    assert did == did_x509.create(pki.root, subject=[("O", "Wabbit Networks")], eku=[CODE_SIGNING])
    wrong = runner.invoke(
        main,
        ["keys", "did-x509", str(tmp_path / "root.pem"), "--subject", "O=Acme", "--check", str(tmp_path / "chain.pem")],
    )
    assert wrong.exit_code != 0 and "O is 'Wabbit Networks', not 'Acme'" in wrong.output

    def create(x5chain: str, out: str) -> Result:
        """`statement create` signed with the leaf's key, carrying the certificates in x5chain."""
        key_file, chain, out_file = (str(tmp_path / name) for name in ("leaf-key.pem", x5chain, out))
        argv = ["statement", "create", "--key", key_file, "--issuer", did, "--subject", SUB]
        return runner.invoke(main, [*argv, "--digest", "sha256:" + "ab" * 32, "--x5chain", chain, "--out", out_file])

    created = create("chain.pem", "s.cose")
    assert created.exit_code == 0, created.output
    s = statement.parse((tmp_path / "s.cose").read_bytes())
    assert 33 in s.message.protected and s.issuer == did
    log = MemoryLog(key(slot=5), iat=int(NOW.timestamp()))
    (tmp_path / "r.cose").write_bytes(log.receipt(log.add(s)))
    (tmp_path / "ts.pem").write_bytes(log.signing_key.public_pem())
    (tmp_path / "p.yaml").write_text(
        "transparency_services: [{name: ts, keys: [{path: ts.pem}]}]\n"
        "issuers: [{name: wabbit, x509_roots: [{path: root.pem}]}]\n"
    )
    verified = runner.invoke(
        main,
        [
            "verify",
            "--statement",
            str(tmp_path / "s.cose"),
            "--receipt",
            str(tmp_path / "r.cose"),
            "--trust",
            str(tmp_path / "p.yaml"),
        ],
    )
    assert verified.exit_code == 0, verified.output
    assert (
        "certificate chain valid at" in verified.output
        and "(receipt iat (ts)), iss bound by did:x509" in verified.output
    )
    other_key = create("root.pem", "x.cose")
    assert other_key.exit_code != 0 and "does not certify --key" in other_key.output
