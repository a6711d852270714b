"""The OCI image layout store: what promotion reads and writes in oci:DIR."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from scitt_oci.oci import manifest as mf
from scitt_oci.oci.manifest import Descriptor
from scitt_oci.promote.layout import REF_NAME, LayoutError, LayoutStore
from tests.registryproc import oci_layout


def _referrer(subject: Descriptor, kind: str) -> bytes:
    return mf.canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": mf.OCI_MANIFEST,
            "artifactType": kind,
            "config": {"mediaType": mf.EMPTY_JSON, "digest": mf.EMPTY_DIGEST, "size": 2},
            "layers": [],
            "subject": subject.to_json(),
        }
    )


def test_reads_a_layout_skopeo_would_push(tmp_path: Path) -> None:
    digest = oci_layout(tmp_path / "img", "seed")
    store = LayoutStore(tmp_path / "img")
    assert store.tag_digest("v1") == digest and store.tag_digest("v2") is None
    fetched = store.manifest(store.repository, "v1")
    assert fetched is not None and fetched[2] == digest and fetched[1] == mf.OCI_MANIFEST
    config = mf.parse(fetched[0]).config
    assert config is not None and store.blob(store.repository, config.digest) is not None
    assert store.referrers(store.repository, digest) == []


def test_referrers_by_subject_and_by_a_copied_fallback_index(tmp_path: Path) -> None:
    store = LayoutStore(tmp_path / "out", create=True)
    image = b'{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","layers":[]}'
    store.put_manifest(image, mf.OCI_MANIFEST, "1.0")
    subject = Descriptor(mf.OCI_MANIFEST, mf.digest_of(image), len(image))
    sig = _referrer(subject, mf.NOTATION_SIGNATURE)
    store.put_referrer(subject, sig, mf.OCI_MANIFEST)
    store.put_referrer(subject, sig, mf.OCI_MANIFEST)  # idempotent: listed once
    assert [d.digest for d in store.referrers(store.repository, subject.digest)] == [mf.digest_of(sig)]
    assert store.referrers(store.repository, subject.digest, mf.STATEMENT_ARTIFACT) == []
    # a tag-schema index (as `skopeo copy` of a registry's sha256-<hex> tag leaves it) is read too
    other = _referrer(subject, "application/spdx+json")
    store.put_blob(other)
    index = mf.empty_index()
    index["manifests"] = [{"mediaType": mf.OCI_MANIFEST, "digest": mf.digest_of(other), "size": len(other)}]
    store.put_manifest(mf.canonical_json(index), mf.OCI_INDEX, mf.fallback_tag(subject.digest))
    found = {d.digest for d in store.referrers(store.repository, subject.digest)}
    assert found == {mf.digest_of(sig), mf.digest_of(other)}
    # moving a tag replaces its entry
    store.put_manifest(sig, mf.OCI_MANIFEST, "1.0")
    names = [
        m.get("annotations", {}).get(REF_NAME)
        for m in json.loads((tmp_path / "out" / "index.json").read_text())["manifests"]
    ]
    assert names.count("1.0") == 1 and store.tag_digest("1.0") == mf.digest_of(sig)


def test_a_blob_whose_content_does_not_match_its_name_is_refused(tmp_path: Path) -> None:
    digest = oci_layout(tmp_path / "img", "seed")
    path = tmp_path / "img" / "blobs" / "sha256" / digest.split(":")[1]
    path.write_bytes(path.read_bytes() + b" ")
    with pytest.raises(LayoutError, match="does not match its digest"):
        LayoutStore(tmp_path / "img").manifest("", digest)


def test_not_a_layout(tmp_path: Path) -> None:
    with pytest.raises(LayoutError, match="is not an OCI image layout"):
        LayoutStore(tmp_path)
    (tmp_path / "oci-layout").write_text("{}")
    (tmp_path / "index.json").write_text("[1, 2]")
    with pytest.raises(Exception, match="index.json"):
        LayoutStore(tmp_path).tag_digest("x")


def test_a_layout_that_is_a_fifo_a_device_or_endless_is_refused_not_read(tmp_path: Path) -> None:
    """A layout may come from anyone (a USB stick across an air gap): index.json or a blob that is a FIFO
    (reading would wait for a writer forever), /dev/zero (endless) or oversized is refused at once."""
    import os

    digest = oci_layout(tmp_path / "img", "seed")
    index = tmp_path / "img" / "index.json"
    index.unlink()
    os.mkfifo(index)
    with pytest.raises(LayoutError, match="index.json: not a regular file"):
        LayoutStore(tmp_path / "img").tag_digest("v1")
    index.unlink()
    index.symlink_to("/dev/zero")
    with pytest.raises(LayoutError, match="index.json: not a regular file"):
        LayoutStore(tmp_path / "img").tag_digest("v1")
    index.unlink()
    with index.open("wb") as fh:  # sparse: large without taking the disk
        fh.truncate(mf.MAX_MANIFEST_BYTES + 1)
    with pytest.raises(LayoutError, match=f"more than {mf.MAX_MANIFEST_BYTES} bytes"):
        LayoutStore(tmp_path / "img").tag_digest("v1")
    blob = tmp_path / "img" / "blobs" / "sha256" / digest.split(":")[1]
    blob.unlink()
    os.mkfifo(blob)
    with pytest.raises(LayoutError, match="not a regular file"):
        LayoutStore(tmp_path / "img").manifest("", digest)
