"""The watcher's signature trust from the configuration's `signatures` block: files, public-good, errors."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from scitt_oci import config
from scitt_oci.errors import ConfigError, PolicyError
from scitt_oci.signatures.trust import parse_trusted_root
from scitt_oci.watch import signature_trust
from tests.conftest import shared


def _alpine_pem() -> bytes:
    jws = json.loads(shared("signatures", "notation", "jws_signature.sig").read_bytes())
    cert = x509.load_der_x509_certificate(base64.b64decode(jws["header"]["x5c"][0]))
    return cert.public_bytes(serialization.Encoding.PEM)


def test_every_kind_of_trust_loads_with_paths_relative_to_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "trust").mkdir()
    (tmp_path / "trust" / "alpine.pem").write_bytes(_alpine_pem())
    (tmp_path / "trust" / "tsa.cer").write_bytes(
        shared("signatures", "notation", "truststore", "tsa-globalsignRoot.cer").read_bytes()
    )
    key = ec.generate_private_key(ec.SECP256R1()).public_key()
    (tmp_path / "trust" / "cosign.pub").write_bytes(
        key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    (tmp_path / "trust" / "root.json").write_bytes(shared("signatures", "cosign", "trusted_root_pgi.json").read_bytes())
    (tmp_path / "config.yaml").write_text(
        "signatures:\n"
        "  notation: [{name: alpine, ca: [trust/alpine.pem], tsa: [trust/tsa.cer], trusted_identities: ['x509.subject: C=US, ST=WA, O=Notary, CN=alpine']}]\n"
        "  cosign_keys: [{name: release, key: trust/cosign.pub}]\n"
        "  sigstore:\n"
        "    - {name: private, trusted_root: trust/root.json, identities: [{san: '*@acme.example', issuer: 'https://accounts.google.com'}]}\n"
        "    - {name: public-good, trusted_root: public-good, identities: [{san: release@acme.example, issuer: 'https://accounts.google.com'}]}\n"
    )
    trust = signature_trust.load(config.load(tmp_path / "config.yaml", environ={}).signatures)
    assert trust.names == ("alpine", "release", "private", "public-good")
    assert len(trust.notation[0].ca) == 1 and len(trust.notation[0].tsa) == 1
    assert trust.sigstore[0].authorities and trust.sigstore[1].log_keys
    assert trust.sigstore[1].trusted_root == signature_trust.public_good_root()


def test_nothing_is_trusted_by_default() -> None:
    assert signature_trust.load(config.load(None, environ={}).signatures).empty


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ("notation: [{name: n, trusted_identities: ['*']}]", "needs ca or signing_authority roots"),
        (
            "notation: [{name: n, ca: [missing.pem], trusted_identities: ['*']}]",
            "signatures.notation[0].ca[0]: cannot read",
        ),
        ("notation: [{name: n, ca: [c.pem], trusted_identities: ['CN=x']}]", "must be '*' or 'x509.subject"),
        ("notation: [{name: n, ca: [c.pem]}]", "trusted_identities"),
        (
            "sigstore: [{name: s, trusted_root: c.pem, identities: [{san: a, issuer: b}]}]",
            "signatures.sigstore[0]: trusted root is not JSON",
        ),
        ("sigstore: [{name: s, trusted_root: public-good, identities: []}]", "identities"),
        ("cosign_keys: [{name: k, key: c.pem}]", "signatures.cosign_keys[0]: not a PEM public key"),
        (
            "cosign_keys: [{name: n, key: k.pem}]\n  notation: [{name: n, ca: [c.pem], trusted_identities: ['*']}]",
            "distinct names; repeated: n",
        ),
    ],
)
def test_bad_trust_is_refused_naming_the_setting(tmp_path: Path, block: str, message: str) -> None:
    (tmp_path / "c.pem").write_bytes(_alpine_pem())
    (tmp_path / "k.pem").write_bytes(
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    (tmp_path / "config.yaml").write_text("signatures:\n  " + block + "\n")
    with pytest.raises(
        (ConfigError, PolicyError),
        match=message.replace("[", r"\[").replace("]", r"\]").replace("*", r"\*").replace("(", r"\("),
    ):
        signature_trust.load(config.load(tmp_path / "config.yaml", environ={}).signatures)


@pytest.mark.parametrize(
    ("ca", "message"),
    [
        (
            {"certChain": {"certificates": [{"rawBytes": "MAMCAQE="}]}},
            "certificateAuthorities[0] certificate 1 of 1 (5 bytes) is not a DER-encoded X.509 certificate",
        ),
        (
            {"certChain": {"certificates": ["MAMCAQE="]}},
            "certificateAuthorities[0] certificate 1 of 1 must be an object with rawBytes",
        ),
        ({"certChain": "MAMCAQE="}, "certificateAuthorities[0] has no certificates"),
        (
            {"certChain": {"certificates": {"rawBytes": "x"}}},
            "certificateAuthorities[0].certChain.certificates must be an array",
        ),
    ],
)
def test_a_trusted_root_certificate_that_cannot_be_read_is_named_by_its_place(
    ca: dict[str, object], message: str
) -> None:
    document = json.dumps(
        {"mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1", "certificateAuthorities": [ca]}
    ).encode()
    with pytest.raises(PolicyError) as caught:
        parse_trusted_root(document)
    assert str(caught.value) == f"trusted root: {message}"
