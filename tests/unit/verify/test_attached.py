"""One reading of what a registry holds for an image (oci/attached.py), and `history` reading through it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from scitt_oci.cli import main
from scitt_oci.errors import MalformedError
from scitt_oci.oci import attached
from scitt_oci.oci import client as client_mod
from scitt_oci.oci.manifest import Descriptor
from scitt_oci.oci.reference import Digest, Reference
from tests.memregistry import MemRegistry
from tests.unit.verify.world import HOST, World


@pytest.mark.parametrize("referrers_api", [True, False])
def test_statements_are_read_from_the_referrers_api_or_the_fallback_index(tmp_path: Path, referrers_api: bool) -> None:
    world = World.make(tmp_path, referrers_api=referrers_api)
    desc = world.image()
    ref = Reference.parse(f"{HOST}/acme/app@{desc.digest}")
    statement = world.statement(ref)
    referrer = world.attach("acme/app", desc, statement)
    found = attached.statement_referrers(world.registry, "acme/app", desc.digest)
    assert found == [attached.Attached(referrer, statement)]
    assert attached.attached_statements(world.registry, ref) == [statement]
    assert world.registry.referrers_api is referrers_api


def test_a_referrer_listed_under_another_image_is_not_its_statement(tmp_path: Path) -> None:
    """The tag-schema fallback index is a tag anyone who can push may write: an entry whose manifest's
    subject is another image is not read as this image's statement."""
    world = World.make(tmp_path, referrers_api=False)
    mine, theirs = world.image(seed="mine"), world.image(tag="other", seed="theirs")
    their_ref = Reference.parse(f"{HOST}/acme/app@{theirs.digest}")
    world.attach("acme/app", theirs, world.statement(their_ref), listed_under=mine.digest)
    assert len(world.registry.referrers("acme/app", mine.digest)) == 1  # listed, yet not about `mine`
    assert attached.statement_referrers(world.registry, "acme/app", mine.digest) == []
    assert len(attached.statement_referrers(world.registry, "acme/app", theirs.digest)) == 1


def test_at_most_max_statements_are_read(tmp_path: Path) -> None:
    world = World.make(tmp_path)
    desc = world.image()
    ref = Reference.parse(f"{HOST}/acme/app@{desc.digest}")
    for i in range(attached.MAX_STATEMENTS + 3):
        world.attach("acme/app", desc, world.statement(ref, iat=1_700_000_000 + i))
    world.registry.calls.clear()
    found = attached.statement_referrers(world.registry, "acme/app", desc.digest)
    assert len(found) == attached.MAX_STATEMENTS
    assert found.truncated and found.listed == attached.MAX_STATEMENTS + 3
    assert world.registry.calls["manifest"] == attached.MAX_STATEMENTS


def test_a_referrer_deleted_after_listing_is_skipped(tmp_path: Path) -> None:
    world = World.make(tmp_path, referrers_api=False)
    desc = world.image()
    ref = Reference.parse(f"{HOST}/acme/app@{desc.digest}")
    gone = world.attach("acme/app", desc, world.statement(ref, iat=1_700_000_000))
    kept = world.attach("acme/app", desc, world.statement(ref, iat=1_700_000_001))
    assert world.registry.delete_manifest("acme/app", gone)
    assert [a.referrer for a in attached.statement_referrers(world.registry, "acme/app", desc.digest)] == [kept]


def test_a_tag_resolves_to_the_digest_it_names_now(tmp_path: Path) -> None:
    world = World.make(tmp_path)
    first = world.image(tag="v1", seed="1")
    assert attached.resolve_tag(world.registry, "acme/app", "v1") == first
    second = world.image(tag="v1", seed="2")
    assert attached.resolve_tag(world.registry, "acme/app", "v1") == second
    assert attached.resolve_tag(world.registry, "acme/app", "nope") is None
    tagged = Reference.parse(f"{HOST}/acme/app:v1")
    assert attached.pin(world.registry, tagged) == tagged.with_digest(Digest.parse(second.digest))
    newest = world.image(tag="latest", seed="3")
    latest = attached.pin(world.registry, Reference.parse(f"{HOST}/acme/app"))
    assert latest is not None and str(latest.digest) == newest.digest
    assert attached.pin(world.registry, Reference.parse(f"{HOST}/acme/app:gone")) is None


def test_a_digest_needs_no_registry_read_and_a_bad_digest_is_refused(tmp_path: Path) -> None:
    world = World.make(tmp_path)
    ref = Reference.parse(f"{HOST}/acme/app@sha256:" + "ab" * 32)
    world.registry.calls.clear()
    assert attached.pin(world.registry, ref) is ref and not world.registry.calls

    class Lying(MemRegistry):
        def head_manifest(self, repo: str, reference: str) -> Descriptor | None:
            return Descriptor("application/vnd.oci.image.manifest.v1+json", "sha256:../../etc", 10)

    with pytest.raises(MalformedError):
        attached.resolve_tag(Lying(), "acme/app", "v1")


def _history(monkeypatch: pytest.MonkeyPatch, registry: MemRegistry, image: str) -> tuple[int, str, str]:
    """`scitt-oci history IMAGE --output json`, in process, reading `registry`."""
    monkeypatch.setattr(client_mod, "RegistryClient", lambda settings, **kw: registry)
    result = CliRunner().invoke(main, ["history", image, "--output", "json"])
    return result.exit_code, result.stdout, result.stderr


def test_history_ignores_a_referrer_whose_subject_is_another_image(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`history` used to show every statement listed under the digest; now, as `verify`, only those
    whose manifest's subject is the image."""
    world = World.make(tmp_path, referrers_api=False)
    mine = world.recorded_image(tag="v1", seed="mine")
    theirs = world.image(tag="other", seed="theirs")
    their_ref = Reference.parse(f"{HOST}/acme/app@{theirs.digest}")
    foreign = world.attach("acme/app", theirs, world.statement(their_ref), listed_under=str(mine.digest))
    assert foreign in {d.digest for d in world.registry.referrers("acme/app", str(mine.digest))}
    code, out, _ = _history(monkeypatch, world.registry, str(mine))
    assert code == 0, out
    doc = json.loads(out)
    assert doc["image"] == str(mine)
    assert [r["kind"] for r in doc["records"]] == ["push"]
    assert foreign not in [r["referrer"] for r in doc["records"]]
    assert doc["records"][0]["recorded"] == str(mine.digest)
    code, out, err = _history(monkeypatch, world.registry, f"{HOST}/acme/app:v1")
    assert code == 0 and "is a tag" in err and json.loads(out)["image"] == str(mine)
    code, _, err = _history(monkeypatch, world.registry, f"{HOST}/acme/app:gone")
    assert code != 0 and "does not exist" in err
