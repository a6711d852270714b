"""The tag-schema referrers index under concurrent writers, against Debian's Distribution 2.8 (which
ignores If-Match, so every writer does an unguarded read-modify-write). Interleavings are made
deterministic by writing as "another tool" at the exact moment in question."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from scitt_oci.oci import manifest as mf
from scitt_oci.oci.client import RegistryClient, RegistrySettings
from scitt_oci.oci.manifest import Descriptor
from scitt_oci.watch.inbox import Inbox
from scitt_oci.watch.reconcile import reattach
from tests.registryproc import RegistryProcess

REPO = "acme/app"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryProcess]:
    proc = RegistryProcess(tmp_path_factory.mktemp("fallback") / "registry").start()
    yield proc
    proc.stop()


def _client(registry: RegistryProcess) -> RegistryClient:
    return RegistryClient(RegistrySettings.for_url(registry.url))


def _image(client: RegistryClient, seed: str) -> Descriptor:
    config = json.dumps({"architecture": "amd64", "os": "linux", "seed": seed}).encode()
    digest = client.push_blob(REPO, config)
    doc = mf.canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": mf.OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest, "size": len(config)},
            "layers": [],
        }
    )
    pushed, _ = client.push_manifest(REPO, doc, mf.OCI_MANIFEST)
    return Descriptor(mf.OCI_MANIFEST, pushed, len(doc))


def _referrer(
    client: RegistryClient, image: Descriptor, name: str, artifact_type: str = mf.NOTATION_SIGNATURE
) -> Descriptor:
    """A referrer manifest pushed by digest (what Notation or ORAS push before updating the index)."""
    layer = client.push_blob(REPO, name.encode())
    annotations = {"test.name": name}
    doc = mf.canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": mf.OCI_MANIFEST,
            "artifactType": artifact_type,
            "config": {"mediaType": mf.EMPTY_JSON, "digest": mf.EMPTY_DIGEST, "size": 2},
            "layers": [{"mediaType": "application/cose", "digest": layer, "size": len(name)}],
            "subject": image.to_json(),
            "annotations": annotations,
        }
    )
    client.push_blob(REPO, mf.EMPTY_BLOB)
    digest, _ = client.push_manifest(REPO, doc, mf.OCI_MANIFEST)
    return Descriptor(mf.OCI_MANIFEST, digest, len(doc), artifact_type, annotations)


def _statement(client: RegistryClient, image: Descriptor, n: int) -> bytes:
    return mf.statement_artifact(image, f"statement {n}".encode(), kind="push", issuer="test", service="ts", created=n)


def _index(client: RegistryClient, subject: str) -> list[str]:
    fetched = client.manifest(REPO, mf.fallback_tag(subject))
    if fetched is None:
        return []
    return [d["digest"] for d in json.loads(fetched[0])["manifests"]]


def _write_index(client: RegistryClient, subject: str, entries: list[Descriptor]) -> None:
    """Another tool's write: whatever it read earlier plus its own entry, replacing the tag."""
    doc: dict[str, Any] = {**mf.empty_index(), "manifests": [e.to_json() for e in entries]}
    client.push_manifest(REPO, mf.canonical_json(doc), mf.OCI_INDEX, mf.fallback_tag(subject))


def test_an_entry_seen_before_and_dropped_by_another_writer_is_listed_again(registry: RegistryProcess) -> None:
    ours, tool = _client(registry), _client(registry)
    image = _image(tool, "seen")
    first = _referrer(tool, image, "notation-1")
    _write_index(tool, image.digest, [first])
    ours.attach(REPO, image, _statement(ours, image, 1), [b"statement 1"])
    assert len(_index(ours, image.digest)) == 2
    # A second tool read the index before our write and writes its stale view plus its own entry.
    second = _referrer(tool, image, "notation-2")
    _write_index(tool, image.digest, [second])
    # Our next write for this image puts back what it saw before (our statement, the first signature).
    statement2 = ours.attach(REPO, image, _statement(ours, image, 2), [b"statement 2"])
    listed = _index(ours, image.digest)
    assert set(listed) == {first.digest, second.digest, statement2, mf.digest_of(_statement(ours, image, 1))}
    assert len(listed) == 4


def test_a_referrer_deleted_on_purpose_is_not_listed_again(registry: RegistryProcess) -> None:
    ours, tool = _client(registry), _client(registry)
    image = _image(tool, "deleted")
    signature = _referrer(tool, image, "to-delete")
    _write_index(tool, image.digest, [signature])
    ours.attach(REPO, image, _statement(ours, image, 3), [b"statement 3"])
    # The tool deletes its signature and takes it out of the index (keeping ours).
    kept = [Descriptor(mf.OCI_MANIFEST, d, 0) for d in _index(tool, image.digest) if d != signature.digest]
    response = tool.request(
        "DELETE", f"/v2/{REPO}/manifests/{signature.digest}", scope=f"repository:{REPO}:delete", ok=(202,)
    )
    assert response.status_code == 202
    _write_index(tool, image.digest, kept)
    latest = ours.attach(REPO, image, _statement(ours, image, 4), [b"statement 4"])
    assert signature.digest not in _index(ours, image.digest) and latest in _index(ours, image.digest)


def test_a_writer_inside_the_settle_pause_is_outlasted(registry: RegistryProcess) -> None:
    """A writer that read before our write and writes after it: the confirming read after the pause
    sees our entry gone and merges again, keeping the other writer's entry too."""
    tool = _client(registry)
    image = _image(tool, "pause")
    early = _referrer(tool, image, "early")
    _write_index(tool, image.digest, [early])
    late = _referrer(tool, image, "late")
    pauses: list[float] = []

    def stale_write_during_pause(seconds: float) -> None:
        pauses.append(seconds)
        if len(pauses) == 1:
            _write_index(tool, image.digest, [early, late])  # read before our write: no statement in it

    ours = RegistryClient(RegistrySettings.for_url(registry.url), sleep=stale_write_during_pause)
    statement = ours.attach(REPO, image, _statement(ours, image, 5), [b"statement 5"])
    assert pauses and all(0.05 <= p <= 0.25 for p in pauses)
    assert set(_index(ours, image.digest)) == {early.digest, late.digest, statement}


def test_a_new_image_costs_no_pause(registry: RegistryProcess) -> None:
    """An index no one else writes is read once and written once: no pause, no confirming read."""
    pauses: list[float] = []
    ours = RegistryClient(RegistrySettings.for_url(registry.url), sleep=pauses.append)
    image = _image(ours, "fresh")
    statement = ours.attach(REPO, image, _statement(ours, image, 6), [b"statement 6"])
    assert (ours.counts["GET manifests/<fallback-tag>"], ours.counts["PUT manifests/<fallback-tag>"]) == (1, 1)
    assert _index(ours, image.digest) == [statement] and pauses == []


def test_a_stale_writer_after_a_single_write_is_undone_by_the_next_write(registry: RegistryProcess) -> None:
    """A new image's index is written with no confirming read; a tool that read it empty before our
    write and writes after it drops our entry, and our next write to that index lists it again."""
    ours, tool = _client(registry), _client(registry)
    image = _image(tool, "single-write")
    first = ours.attach(REPO, image, _statement(ours, image, 9), [b"statement 9"])
    assert _index(tool, image.digest) == [first]
    signature = _referrer(tool, image, "stale-signer")
    _write_index(tool, image.digest, [signature])  # its view from before our write, plus its entry
    second = ours.attach(REPO, image, _statement(ours, image, 10), [b"statement 10"])
    listed = _index(tool, image.digest)
    assert set(listed) == {first, second, signature.digest} and len(listed) == 3


def test_reconciliation_lists_again_what_is_on_record_but_not_attached(
    registry: RegistryProcess, tmp_path: Path
) -> None:
    ours, tool = _client(registry), _client(registry)
    image = _image(tool, "reconcile")
    signature = _referrer(tool, image, "signed")
    _write_index(tool, image.digest, [signature])
    push = ours.attach(REPO, image, _statement(ours, image, 7), [b"statement 7"])
    about_signature = ours.attach(REPO, image, _statement(ours, image, 8), [b"statement 8"])
    inbox = Inbox(tmp_path / "watch.db")
    name = registry.host
    inbox.record(name, REPO, image.digest, "push", image.digest, image.media_type, image.size, push)
    inbox.record(
        name, REPO, image.digest, "signature", signature.digest, mf.OCI_MANIFEST, signature.size, about_signature
    )
    # A stale writer (or a pusher that strips what it did not write) leaves only its own new entry.
    other = _referrer(tool, image, "other")
    _write_index(tool, image.digest, [other])
    # Too young: left to their writer.
    assert reattach(inbox, name, _client(registry), settle=3600) == 0
    assert reattach(inbox, name, _client(registry), settle=0) == 3
    assert set(_index(ours, image.digest)) == {push, about_signature, signature.digest, other.digest}
    _write_index(tool, image.digest, [other])
    # Confirmed attachments are not checked again by the periodic pass; `backfill` checks everything.
    assert reattach(inbox, name, _client(registry), settle=0) == 0
    assert reattach(inbox, name, _client(registry), settle=0, everything=True) == 3
    assert set(_index(ours, image.digest)) == {push, about_signature, signature.digest, other.digest}


def test_concurrent_attaches_to_one_subject_take_turns_and_leave_no_lock_behind(registry: RegistryProcess) -> None:
    """One client's workers attaching to the same image take turns on its index; the per-subject lock
    lives only while it is held or awaited (a long-running watcher sees millions of subjects)."""
    ours = _client(registry)
    image = _image(ours, "turns")
    with ThreadPoolExecutor(4) as pool:
        attached = list(
            pool.map(
                lambda n: ours.attach(REPO, image, _statement(ours, image, 20 + n), [f"statement {20 + n}".encode()]),
                range(4),
            )
        )
    assert set(_index(ours, image.digest)) == set(attached) and len(set(attached)) == 4
    assert ours._subject_locks == {}
