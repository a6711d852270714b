"""AdmissionReview parsing for every workload kind, responses and patches, and image decisions."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from scitt_oci.cose import keys
from scitt_oci.errors import MalformedError, PolicyError
from scitt_oci.oci.client import RegistryClient, RegistrySettings
from scitt_oci.oci.http import Response
from scitt_oci.oci.reference import Digest, Reference
from scitt_oci.scitt import profile, transparent
from scitt_oci.server.admission import Admission
from scitt_oci.verify import admission as adm
from scitt_oci.verify.image import ImageVerdict, decide
from scitt_oci.verify.trust import load_policy
from tests.helpers import MemoryLog, key

D = "sha256:" + "ab" * 32
POD_SPEC: dict[str, object] = {
    "initContainers": [{"name": "i", "image": "r.example/init@" + D}],
    "containers": [{"name": "c", "image": "r.example/app:v1"}],
    "ephemeralContainers": [{"name": "e", "image": "busybox"}],
}


def review(kind: str, obj: dict[str, object], namespace: str = "prod") -> bytes:
    return json.dumps(
        {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "u-1",
                "kind": {"group": "", "version": "v1", "kind": kind},
                "namespace": namespace,
                "operation": "CREATE",
                "object": obj,
            },
        }
    ).encode()


@pytest.mark.parametrize(
    ("kind", "wrap", "base"),
    [
        ("Pod", lambda s: {"spec": s}, "/spec"),
        ("Deployment", lambda s: {"spec": {"template": {"spec": s}}}, "/spec/template/spec"),
        ("ReplicaSet", lambda s: {"spec": {"template": {"spec": s}}}, "/spec/template/spec"),
        ("StatefulSet", lambda s: {"spec": {"template": {"spec": s}}}, "/spec/template/spec"),
        ("DaemonSet", lambda s: {"spec": {"template": {"spec": s}}}, "/spec/template/spec"),
        ("Job", lambda s: {"spec": {"template": {"spec": s}}}, "/spec/template/spec"),
        (
            "CronJob",
            lambda s: {"spec": {"jobTemplate": {"spec": {"template": {"spec": s}}}}},
            "/spec/jobTemplate/spec/template/spec",
        ),
    ],
)
def test_every_workload_kind_yields_every_container_image(
    kind: str, wrap: Callable[[dict[str, object]], dict[str, object]], base: str
) -> None:
    r = adm.parse_review(review(kind, wrap(POD_SPEC)))
    assert r.uid == "u-1" and r.kind == kind and r.namespace == "prod"
    assert [(u.pointer, u.image) for u in r.images] == [
        (f"{base}/initContainers/0/image", "r.example/init@" + D),
        (f"{base}/containers/0/image", "r.example/app:v1"),
        (f"{base}/ephemeralContainers/0/image", "busybox"),
    ]


def test_image_volumes_are_checked_like_containers() -> None:
    """F6: a Kubernetes image volume mounts an image's content into the containers: it is an image use."""
    spec = {
        "containers": [{"name": "c", "image": "r.example/app@" + D}],
        "volumes": [
            {"name": "cfg", "configMap": {"name": "x"}},
            {"name": "tools", "image": {"reference": "r.example/tools:v2", "pullPolicy": "IfNotPresent"}},
        ],
    }
    r = adm.parse_review(review("Deployment", {"spec": {"template": {"spec": spec}}}))
    assert [(u.pointer, u.image) for u in r.images] == [
        ("/spec/template/spec/containers/0/image", "r.example/app@" + D),
        ("/spec/template/spec/volumes/1/image/reference", "r.example/tools:v2"),
    ]
    for bad in [{"name": "v", "image": {"reference": 7}}, {"name": "v", "image": "r.example/tools:v2"}]:
        with pytest.raises(MalformedError, match="volumes/0/image.reference must be a string"):
            adm.parse_review(review("Pod", {"spec": {"containers": [], "volumes": [bad]}}))
    with pytest.raises(MalformedError, match="volumes must be a list"):
        adm.parse_review(review("Pod", {"spec": {"volumes": "tools"}}))


def test_bad_reviews_and_other_kinds() -> None:
    with pytest.raises(MalformedError, match="AdmissionReview"):
        adm.parse_review(b'{"kind": "Nope"}')
    with pytest.raises(MalformedError, match="not JSON"):
        adm.parse_review(b"{")
    assert adm.parse_review(review("ConfigMap", {"data": {}})).images == ()


def test_normalise_docker_hub_shorthand() -> None:
    assert str(adm.normalise("busybox")) == "docker.io/library/busybox"
    assert str(adm.normalise("team/app:v1")) == "docker.io/team/app:v1"
    assert str(adm.normalise("localhost:5000/app@" + D)) == "localhost:5000/app@" + D


def test_response_and_json_patch_apply_cleanly() -> None:
    out = adm.response(
        "u", True, "", ["careful"], [{"op": "replace", "path": "/spec/containers/0/image", "value": "x@" + D}]
    )
    body = out["response"]
    assert body["allowed"] and body["warnings"] == ["careful"] and body["patchType"] == "JSONPatch"
    patch = json.loads(base64.b64decode(body["patch"]))
    pod = {"spec": {"containers": [{"image": "x:v1"}]}}
    for op in patch:  # a minimal RFC 6902 replace, enough to show the pointer is right
        parts = op["path"].strip("/").split("/")
        target: object = pod
        for p in parts[:-1]:
            if isinstance(target, list):
                target = target[int(p)]
            else:
                assert isinstance(target, dict)
                target = target[p]
        assert isinstance(target, dict)
        target[parts[-1]] = op["value"]
    assert pod["spec"]["containers"][0]["image"] == "x@" + D
    denied = adm.response("u", False, "no")["response"]
    assert denied["status"] == {"code": 403, "message": "no"} and not denied["allowed"]


# ----------------------------------------------------------------------------- decisions
@dataclass
class World:
    logs: dict[str, MemoryLog]  # by name: "a" and "b" are trusted by _policy, tests may add others
    dir: Path


@pytest.fixture
def world(tmp_path: Path) -> World:
    log_a, log_b = MemoryLog(key(slot=5), issuer="https://a"), MemoryLog(key(slot=6), issuer="https://b")
    (tmp_path / "a.pem").write_bytes(log_a.signing_key.public_pem())
    (tmp_path / "b.pem").write_bytes(log_b.signing_key.public_pem())
    (tmp_path / "issuer.pem").write_bytes(key().public_pem())
    return World({"a": log_a, "b": log_b}, tmp_path)


def _policy(world: World, extra: str = "") -> Path:
    path = world.dir / "policy.yaml"
    path.write_text(
        "transparency_services: [{name: a, keys: [{path: a.pem}]}, {name: b, keys: [{path: b.pem}]}]\n"
        "issuers: [{name: w, keys: [{path: issuer.pem}]}]\n" + extra
    )
    return path


def _ts(
    world: World,
    kind: profile.Kind = profile.Kind.PUSH,
    logs: str = "a",
    iat: int = 1_800_000_000,
    signer_key: keys.CoseKey | None = None,
    named: Mapping[str, profile.Detail] | None = None,
    **details: profile.Detail,
) -> bytes:
    """A transparent statement with receipts from `logs`; `named` adds details whose names are no Python identifiers."""
    ref = Reference.parse(f"r.example/app@{D}")
    recorded = Digest.parse("sha256:" + "cd" * 32) if kind in profile.SIGNED_KINDS else None
    event = profile.make_event(kind, ref, recorded_digest=recorded, media_type=None, **details, **(named or {}))
    s = profile.build(signer_key or key(), "https://w", event, iat=iat)
    receipts = []
    for name in logs:
        log = world.logs[name]
        receipts.append(log.receipt(log.add(s)))
    return transparent.add_receipts(s, receipts)


def _notation(
    world: World, signer: str, anchor: str, kind: profile.Kind = profile.Kind.SIGNATURE, logs: str = "a"
) -> bytes:
    """A verified Notation signature (or attestation) statement by `signer`, trusted through `anchor`."""
    return _ts(world, kind, logs, format="notation", verified=True, signer=signer, anchor=anchor)


REF = Reference.parse(f"r.example/app@{D}")
NOW = 1_800_000_100


def test_decisions_and_their_reasons(world: World) -> None:
    policy = load_policy(_policy(world))
    assert decide(REF, [_ts(world)], policy, now=NOW).valid
    assert [f.reason.value for f in decide(REF, [], policy, now=NOW).reasons] == ["NO_STATEMENTS"]
    rogue = MemoryLog(key(slot=7))
    world.logs["r"] = rogue
    assert [f.reason.value for f in decide(REF, [_ts(world, logs="r")], policy, now=NOW).reasons] == [
        "UNKNOWN_RECEIPT_KEY"
    ]
    other = Reference.parse("r.example/app@sha256:" + "00" * 32)
    assert "SUBJECT_MISMATCH" in [f.reason.value for f in decide(other, [_ts(world)], policy, now=NOW).reasons]
    tampered = bytearray(_ts(world))
    tampered[-5] ^= 1
    assert not decide(REF, [bytes(tampered)], policy, now=NOW).valid
    untrusted = decide(REF, [_ts(world, signer_key=key(slot=3))], policy, now=NOW)
    assert [f.reason.value for f in untrusted.reasons] == ["UNTRUSTED_ISSUER"]


def test_policy_requirements_rules_and_audit_mode(world: World) -> None:
    strict = load_policy(
        _policy(
            world,
            "require: {receipts: 2, max_age: 1d, signatures: [{format: notation, signer: 'x509.subject: CN=W*'}]}\n"
            "rules: [{match: 'r.example/sandbox/*', mode: audit}]\n",
        )
    )
    one = decide(REF, [_ts(world)], strict, now=NOW)
    assert {f.reason.value for f in one.reasons} == {"TOO_FEW_RECEIPTS"}
    both = [
        _ts(world, logs="ab"),
        _notation(world, "x509.subject: CN=Wabbit", "wabbit", logs="ab"),
    ]
    assert decide(REF, both, strict, now=NOW).valid
    old = decide(REF, both, strict, now=NOW + 2 * 86400)
    assert [f.reason.value for f in old.reasons] == ["EXPIRED"]
    unsigned = decide(REF, both[:1], strict, now=NOW)
    assert [f.reason.value for f in unsigned.reasons] == ["MISSING_STATEMENT"] and not unsigned.allowed
    sandbox = decide(Reference.parse(f"r.example/sandbox/app@{D}"), [], strict, now=NOW)
    assert sandbox.allowed and not sandbox.valid and sandbox.mode == "audit" and sandbox.warnings
    deleted = decide(
        REF, [_ts(world, logs="ab"), _ts(world, profile.Kind.DELETE, logs="ab")], load_policy(_policy(world)), now=NOW
    )
    assert "deleted" in deleted.summary()


# ----------------------------------------------------------------------------- failures deny, never a 500
class _Exploding(RegistryClient):
    """A registry client whose every request fails with an error nobody planned for."""

    def request(self, method: str, path: str, *, scope: str = "", ok: tuple[int, ...] = (200,), **kw: Any) -> Response:
        raise ValueError("boom from a place nobody expected")


def test_an_unexpected_failure_is_a_denial_with_its_reason(world: World) -> None:
    controller = Admission(_policy(world), {"r.example": _Exploding(RegistrySettings.for_url("https://r.example"))})
    body = review("Pod", {"spec": {"containers": [{"name": "c", "image": f"r.example/app@{D}"}]}})
    out = asyncio.run(controller.review(body, mutate=False))["response"]
    assert (
        out["allowed"] is False and "VERIFIER_ERROR" in out["status"]["message"] and "boom" in out["status"]["message"]
    )
    provider = json.dumps(
        {
            "apiVersion": "externaldata.gatekeeper.sh/v1beta1",
            "kind": "ProviderRequest",
            "request": {"keys": [f"r.example/app@{D}"]},
        }
    ).encode()
    item = asyncio.run(controller.gatekeeper(provider))["response"]["items"][0]
    assert "VERIFIER_ERROR" in item["error"]


def test_mutating_and_unauthenticated_reviews_record_no_deploy(world: World) -> None:
    admitted: list[str] = []

    class Admits(Admission):
        async def verdict(
            self, ref: Reference, policy: object, deadline: float, budget: object = None
        ) -> tuple[ImageVerdict, bool]:
            return ImageVerdict(str(ref), True, True, "enforce", None), False

    controller = Admits(_policy(world), {}, on_admit=lambda ref, ns, wl: admitted.append(ns))
    body = review("Pod", {"spec": {"containers": [{"name": "c", "image": f"r.example/app@{D}"}]}})
    for mutate, authenticated in ((True, True), (False, False), (True, False)):
        assert asyncio.run(controller.review(body, mutate=mutate, authenticated=authenticated))["response"]["allowed"]
    assert asyncio.run(controller.review(body, mutate=False, authenticated=True))["response"]["allowed"]
    controller._deploys.shutdown(wait=True)  # the deploy is handed to its thread; wait for it to run
    assert admitted == ["prod"]


def _v1_signature(world: World, signer: str) -> bytes:
    """A statement as profile v1 wrote it: the signer copied from the pusher's annotation."""
    from scitt_oci.scitt import statement

    ref = Reference.parse(f"r.example/app@{D}")
    s = statement.hash_envelope_statement(
        key(),
        issuer="https://w",
        subject=ref.uri(),
        digest=bytes.fromhex("cd" * 32),
        hash_alg=-16,
        media_type=None,
        location=ref.with_digest(Digest.parse("sha256:" + "cd" * 32)).uri(),
        iat=1_800_000_000,
        extra_protected={profile.PROFILE_LABEL: {"v": 1, "kind": "signature", "format": "notation", "signer": signer}},
    )
    log = world.logs["a"]
    return transparent.add_receipts(s, [log.receipt(log.add(s))])


def test_signature_rules_count_verified_signatures_only(world: World) -> None:
    policy = load_policy(
        _policy(world, "require: {signatures: [{format: notation, signer: 'x509.subject: O=Notary'}]}\n")
    )
    push = _ts(world)
    claimed = decide(REF, [push, _v1_signature(world, "x509.subject: C=US, O=Notary")], policy, now=NOW)
    assert not claimed.valid and [f.reason.value for f in claimed.reasons] == ["MISSING_STATEMENT"]
    assert "whose signer (x509.subject: C=US, O=Notary) nobody verified" in claimed.reasons[0].message
    failed = _ts(
        world,
        profile.Kind.SIGNATURE,
        format="notation",
        verified=False,
        reason="the envelope signature does not verify",
    )
    unverified = decide(REF, [push, failed], policy, now=NOW)
    assert (
        not unverified.valid
        and "did not verify: the envelope signature does not verify" in unverified.reasons[0].message
    )
    good = _notation(world, "x509.subject: C=US, O=Notary", "wabbit")
    assert decide(REF, [push, good], policy, now=NOW).valid
    att = _notation(world, "x509.subject: C=US, O=Notary", "wabbit", profile.Kind.ATTESTATION)
    assert not decide(REF, [push, att], policy, now=NOW).valid  # an attestation is not a signature


def test_notation_signer_rules_compare_the_subject_attribute_by_attribute(world: World) -> None:
    """F1: a leaf whose L is "Seattle, O=Notary" (and which has no O) is recorded escaped, and a signer
    rule (without `anchor`) is matched on parsed attributes: the look-alike never satisfies it."""
    push = _ts(world)
    real = _notation(world, "x509.subject: C=US, ST=WA, L=Seattle, O=Notary, CN=alpine", "notary")
    look_alike = _notation(world, "x509.subject: C=US, ST=WA, L=Seattle\\, O=Notary, CN=alpine", "partner")
    for rule in [
        "x509.subject: C=US, ST=WA, L=Seattle, O=Notary, CN=alpine",
        "x509.subject: O=Notary, CN=alpine",
        "x509.subject: C=US, O=Not*",
        "x509.subject: CN=alp*, O=Notary",
    ]:
        policy = load_policy(_policy(world, f"require: {{signatures: [{{format: notation, signer: '{rule}'}}]}}\n"))
        assert decide(REF, [push, real], policy, now=NOW).valid, rule
        assert not decide(REF, [push, look_alike], policy, now=NOW).valid, rule
    # the look-alike's own name, escaped as recorded, still names it (and only it)
    own = "x509.subject: L=Seattle\\, O=Notary, CN=alpine"
    policy = load_policy(_policy(world, f"require: {{signatures: [{{signer: '{own}'}}]}}\n"))
    assert decide(REF, [push, look_alike], policy, now=NOW).valid
    assert not decide(REF, [push, real], policy, now=NOW).valid
    # a glob may not run across attributes, and a Notation rule names attributes
    for bad in ["x509.subject: *O=Notary*", "*alpine*", "x509.subject: C=US, C=CA"]:
        with pytest.raises(PolicyError, match="signer"):
            load_policy(_policy(world, f"require: {{signatures: [{{format: notation, signer: '{bad}'}}]}}\n"))


def test_signature_rules_may_name_the_trust_anchor_and_oidc_issuer(world: World) -> None:
    sig = _ts(
        world,
        profile.Kind.SIGNATURE,
        format="cosign-bundle",
        verified=True,
        signer="release@acme.example",
        anchor="public-good",
        named={"oidc-issuer": "https://accounts.google.com"},
    )
    for rule, valid in [
        ("{anchor: public-good}", True),
        ("{anchor: acme-private}", False),
        ("{signer: release@acme.example, issuer: 'https://accounts.google.com'}", True),
        ("{signer: release@acme.example, issuer: 'https://github.com/login/oauth'}", False),
    ]:
        policy = load_policy(_policy(world, f"require: {{signatures: [{rule}]}}\n"))
        assert decide(REF, [_ts(world), sig], policy, now=NOW).valid is valid, rule


def test_a_required_signature_kind_counts_verified_signatures_only(world: World) -> None:
    """`require.statements: [signature]` is not met by a signature the watcher could not verify (review finding F8)."""
    policy = load_policy(_policy(world, "require: {statements: [push, signature]}\n"))
    push = _ts(world)
    junk = _ts(world, profile.Kind.SIGNATURE, format="cosign", verified=False, reason="no trusted key verifies it")
    refused = decide(REF, [push, junk], policy, now=NOW)
    assert [f.reason.value for f in refused.reasons] == ["MISSING_STATEMENT"], refused.summary()
    assert "1 unverified do not count" in refused.summary()
    real = _notation(world, "CN=Wabbit", "wabbit")
    assert decide(REF, [push, junk, real], policy, now=NOW).valid


def test_an_image_pushed_again_after_its_delete_is_on_record_again(world: World) -> None:
    """Deleted while no push was recorded after the delete; a push recorded later is the image pushed again."""
    policy = load_policy(_policy(world))
    first, delete = _ts(world, iat=1_800_000_000), _ts(world, profile.Kind.DELETE, iat=1_800_000_100)
    assert "deleted" in decide(REF, [first, delete], policy, now=NOW).summary()
    assert (
        "deleted" in decide(REF, [first, _ts(world, profile.Kind.DELETE, iat=1_800_000_000)], policy, now=NOW).summary()
    )
    again = _ts(world, iat=1_800_000_200)
    assert decide(REF, [first, delete, again], policy, now=NOW).valid


def test_a_registry_spelt_another_way_reaches_its_configured_client(world: World) -> None:
    """`R.EXAMPLE:443/...` is the registry `r.example` (as policy rules already match it): its configured
    client is asked, rather than the image being denied as from an unconfigured registry."""
    controller = Admission(_policy(world), {"r.example": _Exploding(RegistrySettings.for_url("https://r.example"))})
    body = review("Pod", {"spec": {"containers": [{"name": "c", "image": f"R.EXAMPLE:443/app@{D}"}]}})
    out = asyncio.run(controller.review(body, mutate=False))["response"]
    assert out["allowed"] is False and "boom" in out["status"]["message"], out["status"]["message"]
