"""The scitt-oci profile (v2; v1 still read): a verifier holding only a digest tells offline whether a statement is about it."""

from __future__ import annotations

import pytest

from scitt_oci.cose import sign1
from scitt_oci.errors import MalformedError
from scitt_oci.oci.reference import Digest, Reference
from scitt_oci.scitt import profile, statement
from scitt_oci.scitt.reasons import Reason, VerificationFailure
from tests.helpers import key

IMAGE = "sha256:" + "ab" * 32
SIG = "sha256:" + "cd" * 32
REF = Reference.parse(f"registry.example:5000/wabbit/net-monitor@{IMAGE}")


def test_push_statement_is_about_its_image_only() -> None:
    event = profile.make_event(
        profile.Kind.PUSH, REF, media_type="application/vnd.oci.image.manifest.v1+json", tag="v1"
    )
    s = profile.build(key(), "https://wabbit-networks.example", event, iat=1)
    parsed = statement.parse(s.encode())
    assert parsed.subject == f"oci://registry.example:5000/wabbit/net-monitor@{IMAGE}"
    assert parsed.envelope is not None and parsed.envelope.digest == bytes.fromhex("ab" * 32)
    got = profile.check_about(parsed, IMAGE)
    assert got.kind is profile.Kind.PUSH and got.detail("tag") == "v1"
    with pytest.raises(VerificationFailure, match=f"about {IMAGE}, not sha256:") as info:
        profile.check_about(parsed, "sha256:" + "00" * 32)
    assert info.value.reason is Reason.SUBJECT_MISMATCH


def test_signature_statement_records_the_signature_and_names_the_image() -> None:
    event = profile.make_event(
        profile.Kind.SIGNATURE,
        REF,
        recorded_digest=Digest.parse(SIG),
        format="notation",
        verified=True,
        signer="CN=Wabbit",
        anchor="wabbit",
    )
    parsed = statement.parse(profile.build(key(), "https://w.example", event).encode())
    got = profile.check_about(parsed, IMAGE)
    assert got.recorded_digest == Digest.parse(SIG) and got.detail("format") == "notation"
    assert got.verified and got.version == 2 and got.detail("anchor") == "wabbit"
    with pytest.raises(VerificationFailure) as info:
        profile.check_about(parsed, SIG)  # about the image, not about the signature artifact
    assert info.value.reason is Reason.SUBJECT_MISMATCH


def test_deploy_and_delete_kinds_and_sha512() -> None:
    ref512 = Reference.parse("r.example/app@sha512:" + "ef" * 64)
    deploy = profile.make_event(profile.Kind.DEPLOY, ref512, cluster="prod", namespace="web", workload="Deployment/web")
    parsed = statement.parse(profile.build(key(), "https://acme.example", deploy).encode())
    assert profile.check_about(parsed, "sha512:" + "ef" * 64).detail("cluster") == "prod"
    delete = profile.make_event(profile.Kind.DELETE, REF)
    assert (
        profile.check_about(statement.parse(profile.build(key(), "https://w", delete).encode()), IMAGE).kind
        is profile.Kind.DELETE
    )


def test_profile_rules_are_enforced() -> None:
    with pytest.raises(MalformedError, match="take tag, not 'cluster'"):
        profile.make_event(profile.Kind.PUSH, REF, cluster="x")
    with pytest.raises(MalformedError, match="format must be one of"):
        profile.make_event(profile.Kind.SIGNATURE, REF, recorded_digest=Digest.parse(SIG), format="pgp")
    with pytest.raises(MalformedError, match="records the image itself"):
        profile.make_event(profile.Kind.PUSH, REF, recorded_digest=Digest.parse(SIG))
    plain = statement.build(key(), issuer="i", subject=f"oci://r.example/a@{IMAGE}", payload=b"x")
    with pytest.raises(VerificationFailure, match='no "scitt-oci" map') as info:
        profile.check_about(plain, IMAGE)
    assert info.value.reason is Reason.MALFORMED


def test_a_push_statement_whose_payload_is_another_digest_is_malformed() -> None:
    event = profile.make_event(profile.Kind.PUSH, REF)
    good = profile.build(key(), "https://w", event)
    protected = dict(good.message.protected)
    forged = sign1.sign(key(), protected, bytes.fromhex("cd" * 32))
    with pytest.raises(VerificationFailure, match="payload-location|payload must be the subject digest"):
        profile.check_about(statement.from_message(forged), IMAGE)


def test_references_and_digests_parse_strictly() -> None:
    assert str(Reference.parse("localhost:5000/a/b:v1")) == "localhost:5000/a/b:v1"
    for bad in ["nohost", "r.example/UPPER", "r.example/a@sha256:xyz", "r.example/a:bad tag"]:
        with pytest.raises(MalformedError):
            Reference.parse(bad)
    with pytest.raises(MalformedError, match="needs 64 lowercase hex"):
        Digest.parse("sha256:AB")


def _v1_signature(signer: str) -> statement.SignedStatement:
    header = {"v": 1, "kind": "signature", "format": "notation", "signer": signer}
    return statement.hash_envelope_statement(
        key(),
        issuer="https://w",
        subject=REF.uri(),
        digest=bytes.fromhex("cd" * 32),
        hash_alg=-16,
        media_type=None,
        location=REF.with_digest(Digest.parse(SIG)).uri(),
        extra_protected={profile.PROFILE_LABEL: header},
    )


def test_v1_signature_statements_read_but_their_signer_is_a_claim() -> None:
    got = profile.check_about(statement.parse(_v1_signature("x509 sha256:2f3c").encode()), IMAGE)
    assert got.version == 1 and got.detail("signer") == "x509 sha256:2f3c"
    assert not got.verified


def test_signature_statements_say_what_was_verified() -> None:
    sig = Digest.parse(SIG)
    with pytest.raises(MalformedError, match="must say whether it was verified"):
        profile.make_event(profile.Kind.SIGNATURE, REF, recorded_digest=sig, format="cosign")
    with pytest.raises(MalformedError, match="names its signer and the trust anchor"):
        profile.make_event(
            profile.Kind.SIGNATURE, REF, recorded_digest=sig, format="cosign", verified=True, signer="a@b"
        )
    with pytest.raises(MalformedError, match=r"an unverified signature names no signer \(signer given\)"):
        profile.make_event(
            profile.Kind.SIGNATURE, REF, recorded_digest=sig, format="cosign", verified=False, signer="a@b", reason="x"
        )
    with pytest.raises(MalformedError, match="says why"):
        profile.make_event(profile.Kind.SIGNATURE, REF, recorded_digest=sig, format="cosign", verified=False)
    with pytest.raises(MalformedError, match="'verified' must be true or false"):
        profile.make_event(
            profile.Kind.SIGNATURE, REF, recorded_digest=sig, format="cosign", verified="yes", reason="x"
        )
    att = profile.make_event(
        profile.Kind.ATTESTATION,
        REF,
        recorded_digest=sig,
        format="cosign",
        verified=False,
        reason="no key",
        **{"predicate-type": "https://slsa.dev/provenance/v1"},
    )
    got = profile.check_about(statement.parse(profile.build(key(), "https://w", att).encode()), IMAGE)
    assert got.kind is profile.Kind.ATTESTATION and got.detail("predicate-type") == "https://slsa.dev/provenance/v1"
    assert not got.verified and got.detail("reason") == "no key"


def test_import_statement_names_source_statements_and_policy() -> None:
    verified = (Digest.parse("sha256:" + "02" * 32), Digest.parse("sha256:" + "01" * 32))
    event = profile.make_import(
        REF, source=f"w.example/net-monitor@{IMAGE}", policy="sha256:" + "aa" * 32, upstream=verified
    )
    parsed = statement.parse(profile.build(key(), "https://acme.example", event, iat=1).encode())
    got = profile.check_about(parsed, IMAGE)
    assert got.kind is profile.Kind.IMPORT and got.recorded_digest == Digest.parse(IMAGE)
    assert got.detail("source") == f"w.example/net-monitor@{IMAGE}" and got.detail("policy") == "sha256:" + "aa" * 32
    assert got.upstream == tuple(sorted(verified, key=str)) and not got.verified
    assert parsed.message.protected["scitt-oci"]["statements"] == sorted(str(d) for d in verified)


def _with_header(header: dict[str, object]) -> statement.SignedStatement:
    """A statement about REF carrying `header` as its profile header, parsed back as a reader gets it."""
    signed = statement.hash_envelope_statement(
        key(),
        issuer="i",
        subject=REF.uri(),
        digest=bytes.fromhex("ab" * 32),
        hash_alg=-16,
        location=REF.uri(),
        extra_protected={"scitt-oci": header},
    )
    return statement.parse(signed.encode())


def test_import_rules() -> None:
    with pytest.raises(MalformedError, match="made with make_import"):
        profile.make_event(profile.Kind.IMPORT, REF, source="x", policy="sha256:" + "aa" * 32)
    with pytest.raises(MalformedError, match="digest 'nope'"):
        profile.make_import(REF, source="x", policy="nope", upstream=())
    # a push statement carrying an import's list is not v1
    header = {"v": 1, "kind": "push", "statements": []}
    with pytest.raises(VerificationFailure, match="push statements take no 'statements' list"):
        profile.read_event(_with_header(header))
    bad = {"v": 2, "kind": "import", "source": "x", "policy": "sha256:" + "aa" * 32, "statements": ["sha256:zz"]}
    with pytest.raises(VerificationFailure, match="sha256:zz"):
        profile.read_event(_with_header(bad))
