"""The in-memory registry double keeps the distribution-spec semantics the unit tests rely on."""

from __future__ import annotations

import pytest

from scitt_oci.oci import manifest as mf
from scitt_oci.oci.client import RegistryError, TransientRegistryError
from scitt_oci.oci.manifest import Descriptor
from tests.memregistry import MemRegistry, push_image, push_index, push_referrer


def test_manifests_by_digest_and_tag_and_deletes() -> None:
    reg = MemRegistry()
    image = push_image(reg, "app", "v1")
    assert reg.head_manifest("app", "v1") == image
    fetched = reg.manifest("app", image.digest)
    assert fetched is not None and fetched[2] == image.digest and mf.digest_of(fetched[0]) == image.digest
    assert reg.tags("app") == ["v1"] and reg.catalog() == ["app"]
    assert reg.delete_manifest("app", "v1") is True  # by tag: the tag goes, the manifest stays
    assert reg.head_manifest("app", "v1") is None and reg.head_manifest("app", image.digest) == image
    push_image(reg, "app", "v2")
    other = reg.head_manifest("app", "v2")
    assert other is not None
    assert reg.delete_manifest("app", other.digest) is True  # by digest: its tags go too
    assert reg.tags("app") == [] and reg.manifest("app", other.digest) is None


def test_manifest_naming_a_missing_blob_or_child_is_refused() -> None:
    reg = MemRegistry()
    image = push_image(reg, "app")
    missing = Descriptor(mf.OCI_MANIFEST, mf.digest_of(b"nothing"), 7)
    with pytest.raises(RegistryError, match="MANIFEST_BLOB_UNKNOWN"):
        push_index(reg, "app", [image, missing])
    assert push_index(reg, "app", [image]).media_type == mf.OCI_INDEX


@pytest.mark.parametrize("api", [True, False])
def test_attach_lists_the_referrer_either_way(api: bool) -> None:
    reg = MemRegistry(referrers_api=api)
    image = push_image(reg, "app", "v1")
    sig = push_referrer(reg, "app", image, mf.NOTATION_SIGNATURE, b"sig", "application/jose+json")
    artifact = mf.statement_artifact(image, b"ts", kind="push", issuer="i", service="s", created=0)
    digest = reg.attach("app", image, artifact, [b"ts"])
    assert reg.attach("app", image, artifact, [b"ts"]) == digest  # idempotent
    listed = reg.referrers("app", image.digest)
    assert sorted(d.digest for d in listed) == sorted([sig.digest, digest])
    assert [d.digest for d in reg.referrers("app", image.digest, mf.STATEMENT_ARTIFACT)] == [digest]
    assert reg.referrers_api is api
    assert reg.pushed_here("app", digest) and not reg.pushed_here("app", sig.digest)
    assert ("sha256-" + image.digest[7:] in reg.tags("app")) is not api


def test_fail_next_fails_that_many_calls() -> None:
    reg = MemRegistry()
    reg.fail_next(2)
    for _ in range(2):
        with pytest.raises(TransientRegistryError):
            reg.catalog()
    reg.fail_next(1, status=403)
    with pytest.raises(RegistryError) as caught:
        reg.tags("app")
    assert not isinstance(caught.value, TransientRegistryError) and caught.value.status == 403
    assert reg.catalog() == []
