"""The admission service in process, against the in-memory registry: verdicts and their cache, the
deadline, tag pinning, the deploy hook, policy reload and the review limits."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from scitt_oci.errors import ScittOciError, StoreUnavailable
from scitt_oci.oci.manifest import Descriptor
from scitt_oci.oci.reference import Reference
from scitt_oci.scitt import profile
from scitt_oci.verify import admission as adm
from scitt_oci.verify.admission_service import Admission, ReviewBudget
from tests.memregistry import MemRegistry
from tests.unit.verify.world import HOST, World


def pod(*images: str, namespace: str = "prod", name: str = "web", dry_run: bool = False) -> bytes:
    containers = [{"name": f"c{i}", "image": image} for i, image in enumerate(images)]
    return json.dumps(
        {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "u-1",
                "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "namespace": namespace,
                "name": name,
                "dryRun": dry_run,
                "object": {"metadata": {"name": name}, "spec": {"containers": containers}},
            },
        }
    ).encode()


def provider(*keys: str) -> bytes:
    doc = {
        "apiVersion": "externaldata.gatekeeper.sh/v1beta1",
        "kind": "ProviderRequest",
        "request": {"keys": list(keys)},
    }
    return json.dumps(doc).encode()


def service(world: World, **kw: Any) -> Admission:
    return Admission(world.policy_path, {HOST: world.registry}, registry=CollectorRegistry(), **kw)


def answer(controller: Admission, body: bytes, *, mutate: bool = False, authenticated: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = asyncio.run(controller.review(body, mutate=mutate, authenticated=authenticated))["response"]
    return out


def decisions(controller: Admission, decision: str, cached: bool) -> float:
    value = controller.decisions.labels(decision, str(cached).lower())._value.get()
    return float(value)


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World.make(tmp_path)


# ----------------------------------------------------------------------------- verdicts and the cache
def test_an_image_on_record_is_admitted_and_its_verdict_cached(world: World) -> None:
    ref = world.recorded_image()
    controller = service(world)
    assert answer(controller, pod(str(ref)))["allowed"] is True
    reads = sum(world.registry.calls.values())
    assert reads > 0
    assert answer(controller, pod(str(ref)))["allowed"] is True
    assert sum(world.registry.calls.values()) == reads  # the second verdict came from the cache
    assert decisions(controller, "admit", False) == 1 and decisions(controller, "admit", True) == 1


def test_a_denial_is_cached_for_the_negative_ttl_only(world: World) -> None:
    desc = world.image()
    ref = Reference.parse(f"{HOST}/acme/app@{desc.digest}")
    controller = service(world, negative_ttl=0.0)
    out = answer(controller, pod(str(ref)))
    assert out["allowed"] is False and "NO_STATEMENTS" in out["status"]["message"]
    world.attach("acme/app", desc, world.statement(ref))  # recorded since: a 0 s denial is not kept
    assert answer(controller, pod(str(ref)))["allowed"] is True
    kept = service(world, negative_ttl=3600.0)
    other = world.image(tag="v2", seed="late")
    late = Reference.parse(f"{HOST}/acme/app@{other.digest}")
    assert answer(kept, pod(str(late)))["allowed"] is False
    world.attach("acme/app", other, world.statement(late))
    assert answer(kept, pod(str(late)))["allowed"] is False  # still the cached denial


def test_an_unreachable_registry_denies_and_is_not_cached(world: World) -> None:
    ref = world.recorded_image()
    controller = service(world)
    world.registry.fail_next(1, 503)
    out = answer(controller, pod(str(ref)))
    assert out["allowed"] is False and "REGISTRY_UNREACHABLE" in out["status"]["message"]
    assert "injected: HTTP 503" in out["status"]["message"]
    assert answer(controller, pod(str(ref)))["allowed"] is True  # asked again, not the cached failure


def test_an_unconfigured_registry_is_never_contacted(world: World) -> None:
    controller = service(world)
    out = answer(controller, pod("elsewhere.example/app@sha256:" + "ab" * 32))
    assert out["allowed"] is False and "not one this service may contact" in out["status"]["message"]
    assert not world.registry.calls


def test_audit_mode_admits_with_a_warning(world: World) -> None:
    world.write_policy("mode: audit\n")
    desc = world.image()
    controller = service(world)
    out = answer(controller, pod(f"{HOST}/acme/app@{desc.digest}"))
    assert out["allowed"] is True and "NO_STATEMENTS" in out["warnings"][0]
    assert decisions(controller, "audit", False) == 1


def test_excluded_namespaces_and_reviews_without_images_read_nothing(world: World) -> None:
    controller = service(world)
    assert answer(controller, pod(f"{HOST}/acme/app:v1", namespace="kube-system"))["allowed"] is True
    assert answer(controller, pod())["allowed"] is True
    assert not world.registry.calls


def test_a_string_that_is_no_image_reference_is_denied(world: World) -> None:
    out = answer(service(world), pod("UPPER/Case!!"))
    assert out["allowed"] is False and "not an image reference" in out["status"]["message"]


def test_a_body_that_is_no_review_raises(world: World) -> None:
    with pytest.raises(ScittOciError, match="AdmissionReview"):
        asyncio.run(service(world).review(b'{"kind": "Nope"}', mutate=False))


# ----------------------------------------------------------------------------- the deadline
class Stalled(MemRegistry):
    """A registry whose referrers listing does not answer until released."""

    def __init__(self) -> None:
        super().__init__(HOST)
        self.release = threading.Event()

    def referrers(self, repo: str, digest: str, artifact_type: str | None = None) -> list[Descriptor]:
        self.release.wait(30)
        return super().referrers(repo, digest, artifact_type)


def test_no_answer_within_the_deadline_is_a_denial_not_cached(world: World) -> None:
    stalled = Stalled()
    stalled.repositories = world.registry.repositories
    ref = world.recorded_image()
    controller = Admission(world.policy_path, {HOST: stalled}, deadline=0.2, registry=CollectorRegistry())
    try:
        out = answer(controller, pod(str(ref)))
    finally:
        stalled.release.set()
    assert out["allowed"] is False and "within the admission deadline" in out["status"]["message"]
    assert "REGISTRY_UNREACHABLE" in out["status"]["message"]
    assert answer(controller, pod(str(ref)))["allowed"] is True  # released: decided, not the cached timeout


# ----------------------------------------------------------------------------- tags
def test_the_validating_webhook_refuses_tags_and_audit_mode_warns(world: World) -> None:
    world.recorded_image()
    out = answer(service(world), pod(f"{HOST}/acme/app:v1"))
    assert out["allowed"] is False and "TAG_REFERENCE" in out["status"]["message"]
    world.write_policy("rules: [{match: 'registry.test/acme/*', mode: audit}]\n")
    out = answer(service(world), pod(f"{HOST}/acme/app:v1"))
    assert out["allowed"] is True and "TAG_REFERENCE" in out["warnings"][0]


def test_the_mutating_webhook_pins_tags_to_digests(world: World) -> None:
    ref = world.recorded_image()
    out = answer(service(world), pod(f"{HOST}/acme/app:v1"), mutate=True)
    assert out["allowed"] is True and out["patchType"] == "JSONPatch"
    patch = json.loads(base64.b64decode(out["patch"]))
    assert patch == [{"op": "replace", "path": "/spec/containers/0/image", "value": str(ref)}]
    missing = answer(service(world), pod(f"{HOST}/acme/app:nope"), mutate=True)
    assert missing["allowed"] is False and "the tag could not be resolved" in missing["status"]["message"]
    elsewhere = answer(service(world), pod("elsewhere.example/app:v1"), mutate=True)
    assert elsewhere["allowed"] is False and "REGISTRY_UNREACHABLE" in elsewhere["status"]["message"]


def test_a_tag_that_cannot_be_resolved_in_time_is_denied(world: World) -> None:
    world.recorded_image()
    controller = service(world)
    world.registry.fail_next(1, 503)
    out = answer(controller, pod(f"{HOST}/acme/app:v1"), mutate=True)
    assert out["allowed"] is False and "the tag could not be resolved" in out["status"]["message"]


# ----------------------------------------------------------------------------- the deploy hook
def test_deploys_are_recorded_for_authenticated_validating_reviews_only(world: World) -> None:
    ref = world.recorded_image()
    recorded: list[tuple[str, str, str]] = []
    controller = service(world, on_admit=lambda r, ns, wl: recorded.append((str(r), ns, wl)))
    body = pod(str(ref), namespace="shop", name="web")
    assert answer(controller, body, authenticated=False)["allowed"]
    assert answer(controller, body, mutate=True, authenticated=True)["allowed"]
    assert answer(controller, pod(str(ref), dry_run=True), authenticated=True)["allowed"]
    assert answer(controller, body, authenticated=True)["allowed"]
    controller._deploys.shutdown(wait=True)  # the deploy is handed to its thread: wait for it to run
    assert recorded == [(str(ref), "shop", "Pod/web")]


def test_a_denied_review_records_no_deploy_and_a_failing_hook_changes_nothing(world: World) -> None:
    ref = world.recorded_image()
    unrecorded = world.image(tag="v2", seed="new")
    calls: list[str] = []

    def hook(r: Reference, ns: str, wl: str) -> None:
        calls.append(str(r))
        raise RuntimeError("the deployment log is down")

    controller = service(world, on_admit=hook)
    denied = answer(controller, pod(str(ref), f"{HOST}/acme/app@{unrecorded.digest}"), authenticated=True)
    assert denied["allowed"] is False
    assert answer(controller, pod(str(ref)), authenticated=True)["allowed"] is True
    controller._deploys.shutdown(wait=True)
    assert calls == [str(ref)]


def test_a_deploy_record_waits_out_the_databases_outage_without_holding_admission(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    """The inbox's database away for a while: the deploy record is retried until it is stored, on a
    thread of its own, while admission goes on deciding; past its patience it is given up, one line."""
    ref = world.recorded_image()
    tries: list[str] = []

    def hook(r: Reference, ns: str, wl: str) -> None:
        tries.append(str(r))
        if len(tries) < 3:  # the database is back for the third try
            raise StoreUnavailable("the PostgreSQL inbox is out of reach")

    controller = service(world, on_admit=hook)
    assert answer(controller, pod(str(ref)), authenticated=True)["allowed"] is True
    assert answer(controller, pod(str(ref)), mutate=True, authenticated=True)["allowed"] is True  # not held up
    controller._deploys.shutdown(wait=True)
    assert tries == [str(ref)] * 3

    def away(r: Reference, ns: str, wl: str) -> None:
        raise StoreUnavailable("the PostgreSQL inbox is out of reach")

    patient = service(world, on_admit=away)
    patient.deploy_patience = 0.0
    with caplog.at_level("WARNING", logger="scitt_oci.admission"):
        assert answer(patient, pod(str(ref)), authenticated=True)["allowed"] is True
        patient._deploys.shutdown(wait=True)
    [given_up] = [r for r in caplog.records if r.levelname == "ERROR"]
    assert "was not recorded: the PostgreSQL inbox is out of reach" in given_up.getMessage() and not given_up.exc_info


# ----------------------------------------------------------------------------- policy reload
def test_a_changed_policy_is_reloaded_and_empties_the_cache(world: World) -> None:
    ref = world.recorded_image()
    controller = service(world)
    first = controller.policy()
    assert answer(controller, pod(str(ref)))["allowed"] is True
    assert controller.policy() is first  # unchanged file: not read again
    world.write_policy("require: {receipts: 2}\n")
    os.utime(world.policy_path, ns=(1, 1))  # a new stamp even within one mtime tick
    out = answer(controller, pod(str(ref)))
    assert controller.policy() is not first and controller.policy().digest != first.digest
    assert out["allowed"] is False and "TOO_FEW_RECEIPTS" in out["status"]["message"]


def test_a_policy_that_names_a_changed_key_file_is_reloaded(world: World) -> None:
    ref = world.recorded_image()
    controller = service(world)
    assert answer(controller, pod(str(ref)))["allowed"] is True
    (world.root / "a.pem").write_bytes(world.other_log.signing_key.public_pem())  # log a's key replaced
    out = answer(controller, pod(str(ref)))
    assert out["allowed"] is False and "UNKNOWN_RECEIPT_KEY" in out["status"]["message"]


def test_a_policy_file_gone_denies_with_the_reason(world: World) -> None:
    ref = world.recorded_image()
    controller = service(world)
    world.policy_path.unlink()
    out = answer(controller, pod(str(ref)))
    assert out["allowed"] is False and "VERIFIER_ERROR" in out["status"]["message"]
    assert "policy.yaml" in out["status"]["message"]


# ----------------------------------------------------------------------------- limits
def test_a_review_listing_too_many_images_is_denied_unread(world: World) -> None:
    controller = service(world, max_images=3)
    images = [f"{HOST}/acme/app@sha256:{i:064x}" for i in range(4)]
    out = answer(controller, pod(*images))
    assert out["allowed"] is False and "REVIEW_LIMIT" in out["status"]["message"]
    assert "4 images, more than the 3" in out["status"]["message"] and not world.registry.calls


def test_registry_reads_per_review_are_bounded(world: World) -> None:
    ref = world.recorded_image()
    controller = service(world, max_registry_requests=5, negative_ttl=0.0)
    world.registry.calls.clear()
    images = [str(ref)] + [f"{HOST}/acme/app@sha256:{i:064x}" for i in range(10)]
    out = answer(controller, pod(*images))
    assert out["allowed"] is False and "REVIEW_LIMIT" in out["status"]["message"]
    assert "used its 5 registry reads" in out["status"]["message"]
    assert sum(world.registry.calls.values()) <= 5


def test_a_budget_counts_reads_made_under_it_only() -> None:
    budget = ReviewBudget(2)
    budget.spend()
    budget.spend()
    with pytest.raises(ScittOciError, match="used its 2 registry reads"):
        budget.spend()
    assert budget.run(lambda x: x + 1, 41) == 42


def test_a_client_shared_by_two_services_counts_each_read_once(world: World) -> None:
    service(world)
    service(world)  # the same registry client again (as after a rebuild, or beside the watcher)
    budget = ReviewBudget(10)
    budget.run(world.registry.head_manifest, "acme/app", "latest")
    assert budget.used == 1


# ----------------------------------------------------------------------------- Gatekeeper
def test_gatekeeper_answers_each_key(world: World) -> None:
    ref = world.recorded_image()
    unrecorded = world.image(tag="v2", seed="new")
    controller = service(world)
    items = asyncio.run(
        controller.gatekeeper(provider(str(ref), f"{HOST}/acme/app@{unrecorded.digest}", f"{HOST}/acme/app:v1", "!!"))
    )["response"]["items"]
    assert items[0]["value"]["allowed"] is True and items[0]["value"]["valid"] is True
    assert items[1]["value"]["allowed"] is False and items[1]["value"]["reasons"][0]["code"] == "NO_STATEMENTS"
    assert "TAG_REFERENCE" in items[2]["error"]
    assert "not an image reference" in items[3]["error"]


def test_gatekeeper_refuses_too_many_keys(world: World) -> None:
    controller = service(world, max_images=2)
    with pytest.raises(ScittOciError, match="REVIEW_LIMIT: 3 keys"):
        asyncio.run(controller.gatekeeper(provider("a", "b", "c")))


# ----------------------------------------------------------------------------- the decision seam
def test_decide_returns_the_decision_for_a_parsed_review(world: World) -> None:
    ref = world.recorded_image()
    unrecorded = world.image(tag="v2", seed="new")
    review = adm.parse_review(pod(str(ref), f"{HOST}/acme/app@{unrecorded.digest}"))
    decision = asyncio.run(service(world).decide(review, mutate=False))
    assert decision.allowed is False and decision.admitted == [ref]
    assert len(decision.denials) == 1 and "NO_STATEMENTS" in decision.message
    signed_only = world.statement(ref, profile.Kind.DELETE)
    world.attach("acme/app", Descriptor("application/vnd.oci.image.manifest.v1+json", str(ref.digest), 1), signed_only)
    again = asyncio.run(service(world).decide(adm.parse_review(pod(str(ref))), mutate=False))
    assert again.allowed is False and "deleted" in again.message
