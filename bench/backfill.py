"""Backfill benchmark: `scitt-oci backfill` of a registry that already holds many images.

Run: .venv/bin/python bench/backfill.py [--images 10000] [--repos 100]
The images are written straight into docker-registry's filesystem storage layout (blobs, revision
and tag links), as a registry that has been in use for a while holds them, so that making them
takes seconds instead of a push per image. Then, with the registry running:
- the floor: the registry's own manifest-read rate (GET of every tag's manifest, 8 threads);
- `scitt-oci backfill REGISTRY` as an operator runs it (a subprocess, the SQLite default): images
  recorded per second (listing, signing, registering, attaching) and its peak memory (max RSS).
Goal (issue 13): a rate beside the floor, memory flat in the number of images.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scitt_oci.oci import manifest as mf
from scitt_oci.oci.client import RegistryClient, RegistrySettings
from tests.registryproc import RegistryProcess

V2 = Path("docker/registry/v2")


def _link(path: Path, digest: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / "link").write_text(digest)


def _blob(store: Path, data: bytes) -> str:
    hexd = hashlib.sha256(data).hexdigest()
    d = store / V2 / "blobs" / "sha256" / hexd[:2] / hexd
    d.mkdir(parents=True, exist_ok=True)
    (d / "data").write_bytes(data)
    return "sha256:" + hexd


def populate(store: Path, images: int, repos: int) -> list[tuple[str, str, str]]:
    """Write `images` single-layer images (tag v<n>) over `repos` repositories into Distribution's
    filesystem layout; returns (repository, tag, digest) of each."""
    layer = b"a layer shared by every image\n" * 8
    layer_digest = _blob(store, layer)
    out = []
    for n in range(images):
        repo = f"fleet/app{n % repos}"
        config = json.dumps({"architecture": "amd64", "os": "linux", "n": n}).encode()
        config_digest = _blob(store, config)
        manifest = mf.canonical_json(
            {
                "schemaVersion": 2,
                "mediaType": mf.OCI_MANIFEST,
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": config_digest,
                    "size": len(config),
                },
                "layers": [
                    {"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": len(layer)}
                ],
            }
        )
        digest = _blob(store, manifest)
        r = store / V2 / "repositories" / repo
        for d in (config_digest, layer_digest):
            _link(r / "_layers" / "sha256" / d.split(":")[1], d)
        _link(r / "_manifests" / "revisions" / "sha256" / digest.split(":")[1], digest)
        tag = f"v{n}"
        _link(r / "_manifests" / "tags" / tag / "current", digest)
        _link(r / "_manifests" / "tags" / tag / "index" / "sha256" / digest.split(":")[1], digest)
        out.append((repo, tag, digest))
    return out


def read_floor(client: RegistryClient, images: list[tuple[str, str, str]]) -> float:
    def read(item: tuple[str, str, str]) -> None:
        fetched = client.manifest(item[0], item[1])
        assert fetched is not None and fetched[2] == item[2], item

    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(read, images))
    return len(images) / (time.monotonic() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--repos", type=int, default=100)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-backfill-"))
    started = time.monotonic()
    images = populate(root / "registry" / "store", args.images, args.repos)
    print(
        f"wrote {len(images):,} images over {args.repos} repositories into the registry's storage "
        f"in {time.monotonic() - started:.1f} s"
    )
    registry = RegistryProcess(root / "registry").start()
    try:
        client = RegistryClient(RegistrySettings.for_url(registry.url))
        assert len(client.catalog()) == args.repos, "the registry does not see the repositories written"
        floor = read_floor(client, images)
        print(f"floor: {floor:,.0f} manifest reads/s from docker-registry alone (GET by tag, 8 threads)")
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        started = time.monotonic()
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "scitt_oci",
                "backfill",
                registry.host,
                "--data-dir",
                str(root / "data"),
                "--registry-insecure",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        elapsed = time.monotonic() - started
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss  # KiB, the largest child so far
        if proc.returncode != 0:
            raise SystemExit(f"backfill failed ({proc.returncode}): {proc.stderr[-2000:]}")
        print(proc.stdout.strip())
        recorded = sum(
            1
            for repo, _tag, digest in images[:: max(1, len(images) // 200)]
            if client.head_manifest(repo, mf.fallback_tag(digest)) is not None
        )
        sampled = len(images[:: max(1, len(images) // 200)])
        print(
            f"backfill: {len(images):,} images in {elapsed:,.1f} s = {len(images) / elapsed:,.1f} images/s "
            f"({len(images) / elapsed / floor:.1%} of the floor); peak memory {max(peak, before) / 1024:,.0f} MiB; "
            f"{recorded}/{sampled} sampled images have their statement attached"
        )
    finally:
        registry.stop()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
