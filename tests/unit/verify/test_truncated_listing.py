"""A referrers listing longer than what is read is never decided on: padding the listing with junk
statement referrers (anyone who can push can) must not hide a later delete record and admit the image."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from prometheus_client import CollectorRegistry

from scitt_oci.cli import main
from scitt_oci.oci import attached
from scitt_oci.oci import client as client_mod
from scitt_oci.oci.reference import Reference
from scitt_oci.scitt import profile
from scitt_oci.verify.admission_service import Admission
from scitt_oci.verify.image import decide
from scitt_oci.verify.trust import load_policy
from tests.unit.verify.test_admission_service import answer, pod, provider
from tests.unit.verify.world import HOST, World


def padded(world: World, junk: int) -> Reference:
    """An image with its push recorded, `junk` junk statement referrers after it, then its delete."""
    desc = world.image()
    ref = Reference.parse(f"{HOST}/acme/app@{desc.digest}")
    world.attach("acme/app", desc, world.statement(ref, iat=1_700_000_000))
    for i in range(junk):
        world.attach("acme/app", desc, b"junk %d" % i)
    world.attach("acme/app", desc, world.statement(ref, profile.Kind.DELETE, iat=1_700_000_100))
    return ref


@pytest.mark.parametrize("referrers_api", [True, False])
def test_a_listing_past_the_bound_is_marked_truncated(tmp_path: Path, referrers_api: bool) -> None:
    world = World.make(tmp_path, referrers_api=referrers_api)
    ref = padded(world, attached.MAX_STATEMENTS)
    found = attached.attached_statements(world.registry, ref)
    assert len(found) == attached.MAX_STATEMENTS
    assert found.truncated and found.listed == attached.MAX_STATEMENTS + 2
    verdict = decide(ref, found, load_policy(world.policy_path))
    assert not verdict.allowed and not verdict.valid
    assert verdict.reasons[0].reason.value == "TOO_MANY_REFERRERS"
    assert f"{attached.MAX_STATEMENTS + 2} candidate" in verdict.reasons[0].message
    assert f"at most {attached.MAX_STATEMENTS}" in verdict.reasons[0].message


def test_a_listing_within_the_bound_is_decided_as_before(tmp_path: Path) -> None:
    world = World.make(tmp_path)
    ref = padded(world, attached.MAX_STATEMENTS - 2)
    found = attached.attached_statements(world.registry, ref)
    assert not found.truncated and found.listed == attached.MAX_STATEMENTS
    verdict = decide(ref, found, load_policy(world.policy_path))
    assert not verdict.allowed and "deleted" in verdict.summary()
    assert "TOO_MANY_REFERRERS" not in verdict.summary()


def test_more_blobs_than_the_bound_given_to_decide_are_refused(tmp_path: Path) -> None:
    world = World.make(tmp_path)
    ref = world.recorded_image()
    good = attached.attached_statements(world.registry, ref)
    verdict = decide(ref, [*good, *[b"junk"] * attached.MAX_STATEMENTS], load_policy(world.policy_path))
    assert not verdict.allowed and verdict.reasons[0].reason.value == "TOO_MANY_REFERRERS"


def test_the_bytes_read_per_image_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    world = World.make(tmp_path)
    desc = world.image()
    for i in range(10):
        world.attach("acme/app", desc, b"%04d" % i + b"x" * 1000)
    monkeypatch.setattr(attached, "MAX_STATEMENTS_TOTAL_BYTES", 3000)
    world.registry.calls.clear()
    found = attached.statement_referrers(world.registry, "acme/app", desc.digest)
    assert len(found) == 3 and found.truncated and found.listed == 10
    assert world.registry.calls["blob"] == 3


def test_admission_denies_a_padded_listing(tmp_path: Path) -> None:
    world = World.make(tmp_path, referrers_api=False)
    ref = padded(world, attached.MAX_STATEMENTS)
    controller = Admission(world.policy_path, {HOST: world.registry}, registry=CollectorRegistry())
    out = answer(controller, pod(str(ref)))
    assert out["allowed"] is False and "TOO_MANY_REFERRERS" in out["status"]["message"]
    mutated = answer(controller, pod(str(ref)), mutate=True)
    assert mutated["allowed"] is False and "TOO_MANY_REFERRERS" in mutated["status"]["message"]
    items = asyncio.run(controller.gatekeeper(provider(str(ref))))["response"]["items"]
    assert items[0]["value"]["allowed"] is False
    assert items[0]["value"]["reasons"][0]["code"] == "TOO_MANY_REFERRERS"


def _cli(monkeypatch: pytest.MonkeyPatch, world: World, *args: str) -> tuple[int, str, str]:
    monkeypatch.setattr(client_mod, "RegistryClient", lambda settings, **kw: world.registry)
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_verify_rejects_a_padded_listing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    world = World.make(tmp_path)
    ref = padded(world, attached.MAX_STATEMENTS)
    code, out, _ = _cli(monkeypatch, world, "verify", str(ref), "--trust", str(world.policy_path), "--output", "json")
    assert code == 1, out
    doc = json.loads(out)
    assert doc["decision"] == "REJECT" and doc["reasons"][0]["code"] == "TOO_MANY_REFERRERS"


def test_history_shows_what_it_read_says_it_was_truncated_and_exits_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    world = World.make(tmp_path)
    ref = padded(world, attached.MAX_STATEMENTS)
    code, out, err = _cli(monkeypatch, world, "history", str(ref))
    assert code == 1
    assert f"{attached.MAX_STATEMENTS} record(s)" in out and "TRUNCATED" in out
    assert "truncated" in err and f"{attached.MAX_STATEMENTS + 2} candidate" in err
    code, out, _ = _cli(monkeypatch, world, "history", str(ref), "--output", "json")
    doc = json.loads(out)
    assert code == 1 and doc["truncated"] is True and doc["listed"] == attached.MAX_STATEMENTS + 2
    assert len(doc["records"]) == attached.MAX_STATEMENTS
