"""Registry round trips per recorded image, counted by the registry client against a real
docker-registry (tag-schema fallback): what each image costs, and that the news of our own writes
(the statement referrer, the fallback index) costs no request at all."""

from __future__ import annotations

import json
import os
from pathlib import Path

from scitt_oci import config as config_mod
from scitt_oci import runtime
from scitt_oci.oci import manifest as mf
from scitt_oci.oci.client import RegistryClient, RegistrySettings
from scitt_oci.watch.events import PUSH, RegistryEvent
from tests.registryproc import RegistryProcess

IMAGES = 6


def _push_image(client: RegistryClient, repo: str, n: int) -> str:
    config = json.dumps({"architecture": "amd64", "os": "linux", "n": n}).encode()
    layer = os.urandom(64)
    doc = mf.canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": mf.OCI_MANIFEST,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": client.push_blob(repo, config),
                "size": len(config),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": client.push_blob(repo, layer),
                    "size": len(layer),
                }
            ],
        }
    )
    return client.push_manifest(repo, doc, mf.OCI_MANIFEST, f"v{n}")[0]


def test_requests_per_recorded_image_and_none_for_our_own_writes(tmp_path: Path) -> None:
    registry = RegistryProcess(tmp_path / "registry").start()
    config = config_mod.load(
        None,
        overrides={
            "data_dir": str(tmp_path / "data"),
            "watch": {"registries": [{"url": registry.host, "insecure": True}]},
        },
    )
    rt = runtime.build(config)
    assert rt.watcher is not None
    rt.service.start()
    try:
        watcher, inbox = rt.watcher, rt.watcher.inbox
        ((name, client),) = watcher.clients.items()
        pusher = RegistryClient(RegistrySettings.for_url(registry.url))
        images = {f"app/r{n % 2}": [] for n in range(IMAGES)}  # type: dict[str, list[str]]
        for n in range(IMAGES):
            images[f"app/r{n % 2}"].append(_push_image(pusher, f"app/r{n % 2}", n))

        def drain() -> None:
            while items := inbox.claim(4):
                for item in items:
                    watcher.process(item)

        inbox.add(
            name, [RegistryEvent(repo, d, None, PUSH, mf.OCI_MANIFEST) for repo, ds in images.items() for d in ds]
        )
        drain()
        assert inbox.counts() == {"done": IMAGES}
        per_image = dict(client.counts)
        # Each image: read its manifest; upload the statement (POST, PUT); push the referrer; read and
        # write the fallback index (a new image's index, which no one else wrote, gets no confirming
        # read: 6 requests, not 7). The empty config blob is checked (and, new, uploaded) once per
        # repository.
        assert per_image == {
            "GET manifests/<digest>": IMAGES,
            "HEAD blobs/<digest>": len(images),
            "POST blobs/uploads": IMAGES + len(images),
            "PUT blobs/uploads": IMAGES + len(images),
            "PUT manifests/<digest>": IMAGES,
            "GET manifests/<fallback-tag>": IMAGES,
            "PUT manifests/<fallback-tag>": IMAGES,
        }, per_image

        # What a registry whose payloads do not mark our own writes (Harbor, zot, generic; Distribution
        # without includereferences) then tells us: each referrer pushed and each index tagged.
        own = []
        for a in inbox.attachments(name, before=float("inf"), everything=True):
            index = pusher.head_manifest(a.repository, mf.fallback_tag(a.subject))
            assert index is not None
            own += [
                RegistryEvent(a.repository, a.referrer, None, PUSH, mf.OCI_MANIFEST),
                RegistryEvent(a.repository, index.digest, mf.fallback_tag(a.subject), PUSH, mf.OCI_INDEX),
            ]
        assert inbox.add(name, own) == 2 * IMAGES
        drain()
        assert inbox.counts() == {"done": 3 * IMAGES}
        assert dict(client.counts) == per_image  # not one more request
        for repo, digests in images.items():
            for d in digests:
                assert len(pusher.referrers(repo, d, mf.STATEMENT_ARTIFACT)) == 1
    finally:
        rt.service.stop()
        registry.stop()
