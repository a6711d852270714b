"""The vocabularies defined once (issue #12 item 6) and the error model's seams (item 4)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from scitt_oci import errors
from scitt_oci.cose import hash_envelope
from scitt_oci.log.policy import RegistrationPolicy, Rejection, RejectionKind
from scitt_oci.oci import manifest as mf
from scitt_oci.oci.reference import DIGEST_HEX_LENGTHS, Digest
from scitt_oci.scitt.profile import SIGNATURE_FORMATS, Kind
from scitt_oci.server.scrapi import REJECTION_STATUS
from scitt_oci.signatures.model import Format
from scitt_oci.verify import trust
from scitt_oci.watch.events import Action, RegistryEvent
from tests.helpers import key

SHA256 = "sha256:" + hashlib.sha256(b"x").hexdigest()
SHA512 = "sha512:" + hashlib.sha512(b"x").hexdigest()


@pytest.mark.parametrize("digest", [SHA256, SHA512])
def test_the_fallback_tag_pattern_matches_what_fallback_tag_makes(digest: str) -> None:
    tag = mf.fallback_tag(digest)
    assert mf.is_fallback_tag(tag) and len(tag) == len(digest.split(":")[0]) + 1 + 64


@pytest.mark.parametrize(
    "tag",
    [None, "latest", "sha256-abc", "sha256-" + "a" * 63, "sha256-" + "a" * 65, "sha256-" + "A" * 64, "md5-" + "a" * 64]
    + ["sha256-" + "a" * 64 + ".sig", "v1-" + "a" * 64],
)
def test_other_tags_are_not_fallback_tags(tag: str | None) -> None:
    assert not mf.is_fallback_tag(tag)


def test_one_hash_table_serves_oci_digests_and_hash_envelopes() -> None:
    assert {name: alg for alg, (name, _size) in hash_envelope.HASHES.items()} == hash_envelope.BY_OCI_ALGORITHM
    for digest in (SHA256, SHA512):
        parsed = Digest.parse(digest)
        name, size = hash_envelope.HASHES[parsed.cose_hash_alg]
        assert name == parsed.algorithm and size * 2 == DIGEST_HEX_LENGTHS[name] == len(parsed.hex)
    assert (Digest.parse(SHA256).cose_hash_alg, Digest.parse(SHA512).cose_hash_alg) == (-16, -44)


def test_signature_formats_and_statement_kinds_are_one_vocabulary() -> None:
    assert SIGNATURE_FORMATS == tuple(Format) == trust._FORMATS
    assert set(trust._KINDS) == {k.value for k in Kind}  # the policy keeps them as text, for start-up time
    assert {a.value for a in Action} <= {k.value for k in Kind}


def test_an_event_read_back_carries_its_action_as_the_enum() -> None:
    event = RegistryEvent("team/app", SHA256, "v1", Action.PUSH)
    back = RegistryEvent.from_json(event.to_json())
    assert back == event and back.action is Action.PUSH and event.to_json()["action"] == "push"
    with pytest.raises(ValueError, match="'pull' is not a valid Action"):
        RegistryEvent.from_json({**event.to_json(), "action": "pull"})


SERVICES = "transparency_services: [{name: ts, keys: [{path: ts.pem}]}]\n"


def test_for_repository_names_its_result(tmp_path: Path) -> None:
    (tmp_path / "ts.pem").write_bytes(key().public_pem())
    doc = tmp_path / "policy.yaml"
    doc.write_text(
        SERVICES + "mode: audit\nrules:\n"
        "  - {match: registry.example/prod/*, mode: enforce, require: {statements: [push, signature]}}\n"
    )
    policy = trust.load_policy(doc)
    assert policy.mode is trust.PolicyMode.AUDIT
    prod = policy.for_repository("registry.example/prod/app")
    assert prod.mode is trust.PolicyMode.ENFORCE and prod.rule == "registry.example/prod/*"
    assert prod.requirements.statements == ("push", "signature")
    other = policy.for_repository("registry.example/dev/app")
    assert (other.mode, other.rule, other.requirements) == (trust.PolicyMode.AUDIT, None, policy.requirements)
    requirements, mode, rule = other  # still a tuple for callers that unpack it
    assert (requirements, mode, rule) == tuple(other)


@pytest.mark.parametrize("mode", ["Enforce", "warn", True, 1, ["audit"]])
def test_a_mode_outside_the_vocabulary_is_refused(tmp_path: Path, mode: object) -> None:
    (tmp_path / "ts.pem").write_bytes(key().public_pem())
    doc = tmp_path / "policy.yaml"
    doc.write_text(SERVICES + f"mode: {mode!r}\n".replace("'", '"'))
    with pytest.raises(errors.PolicyError, match="mode: must be enforce or audit"):
        trust.load_policy(doc)


def test_a_rejection_names_its_kind_and_the_face_picks_the_status() -> None:
    with pytest.raises(Rejection) as refused:
        RegistrationPolicy(max_statement_bytes=10).check(b"\x00" * 11)
    assert refused.value.kind is RejectionKind.TOO_LARGE and refused.value.title == "Payload Too Large"
    assert "11 bytes; this log accepts at most 10" in refused.value.detail
    assert not hasattr(refused.value, "status")
    assert REJECTION_STATUS.get(refused.value.kind, 400) == 413
    with pytest.raises(Rejection) as malformed:
        RegistrationPolicy().check(b"\xa0")
    assert malformed.value.kind is RejectionKind.MALFORMED and REJECTION_STATUS.get(malformed.value.kind, 400) == 400


def test_every_error_class_lives_in_errors_py() -> None:
    import importlib
    import inspect
    import pkgutil

    import scitt_oci

    elsewhere = []
    for info in pkgutil.walk_packages(scitt_oci.__path__, "scitt_oci."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if inspect.isclass(value) and issubclass(value, BaseException) and value.__module__ == info.name:
                elsewhere.append(f"{info.name}.{name}")
    assert [e for e in elsewhere if not e.startswith("scitt_oci.errors.")] == []


def test_configuration_and_trust_policies_fail_with_their_own_errors(tmp_path: Path) -> None:
    from scitt_oci import config

    bad = tmp_path / "scitt.yaml"
    bad.write_text("listen: [1]\n")
    with pytest.raises(errors.ConfigError, match=rf"invalid configuration \(defaults < {bad}\): listen"):
        config.load(bad, environ={})
    assert not issubclass(errors.ConfigError, errors.PolicyError)
    assert not issubclass(errors.PolicyError, errors.ConfigError)
