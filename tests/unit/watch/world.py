"""A watcher in one process for unit tests: the in-memory registry, a real SQLite inbox, and a real
transparency service (SQLite log, its sequencer running) registering what the watcher signs."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

from scitt_oci.log.policy import RegistrationPolicy
from scitt_oci.log.service import TransparencyService
from scitt_oci.log.sqlite_store import SqliteStore
from scitt_oci.oci import manifest as mf
from scitt_oci.oci.manifest import Descriptor
from scitt_oci.scitt import profile, transparent
from scitt_oci.signatures import cosign
from scitt_oci.watch.events import PUSH, RegistryEvent
from scitt_oci.watch.inbox import Inbox
from scitt_oci.watch.worker import EmbeddedRegistrar, Watcher
from tests import sigstore_double as sd
from tests.helpers import key
from tests.memregistry import MemRegistry

REGISTRY = "registry.test"
ISSUER = "https://watcher.test"


@dataclass
class World:
    registry: MemRegistry
    inbox: Inbox
    service: TransparencyService
    watcher: Watcher[MemRegistry]

    def drain(self) -> int:
        """Process every due event (and what processing queues) in this thread; how many were processed."""
        n = 0
        while items := self.inbox.claim(8):
            for item in items:
                self.watcher.process(item)
                n += 1
        return n

    def push(self, repo: str, digest: str | None, tag: str | None = None, media_type: str | None = None) -> None:
        self.inbox.add(REGISTRY, [RegistryEvent(repo, digest, tag, PUSH, media_type)])

    def statements(self, repo: str, subject: str) -> list[profile.OciEvent]:
        """The events recorded by the Transparent Statements attached to `subject`, each checked to carry
        one receipt."""
        out = []
        for d in self.registry.referrers(repo, subject, mf.STATEMENT_ARTIFACT):
            fetched = self.registry.manifest(repo, d.digest)
            assert fetched is not None
            artifact = mf.parse(fetched[0], fetched[1])
            assert artifact.subject is not None and artifact.subject.digest == subject
            blob = self.registry.blob(repo, artifact.layers[0].digest)
            assert blob is not None
            ts = transparent.parse(blob)
            assert len(ts.receipts) == 1
            out.append(profile.read_event(ts.statement))
        return out


@contextmanager
def world(
    tmp_path: Path, *, referrers_api: bool = True, inbox: Inbox | None = None, **watcher_kw: Any
) -> Iterator[World]:
    """`inbox`: another than the SQLite one made here (a PostgreSQL inbox); closed at the end."""
    issuer_key = key(slot=1)
    service = TransparencyService(
        SqliteStore(tmp_path / "log.db", synchronous="NORMAL"),
        key(slot=9),
        RegistrationPolicy.build(issuer_keys=[issuer_key]),
        identity="https://ts.test",
        max_delay=0.0,
    )
    service.start()
    inbox = inbox or Inbox(tmp_path / "watch.db", base_delay=0.0, max_attempts=3)
    registry = MemRegistry(REGISTRY, referrers_api=referrers_api)
    watcher = Watcher(inbox, {REGISTRY: registry}, issuer_key, ISSUER, EmbeddedRegistrar(service), **watcher_kw)
    try:
        yield World(registry, inbox, service, watcher)
    finally:
        watcher.stop()
        inbox.close()
        service.stop()


def cosign_signature(registry: MemRegistry, repo: str, image: Descriptor, signer: ec.EllipticCurvePrivateKey) -> str:
    """A cosign classic signature of `image` by `signer`, pushed under its `sha256-<hex>.sig` tag; its digest."""
    payload = sd.simple_signing(image.digest)
    signature = signer.sign(payload, ec.ECDSA(hashes.SHA256()))
    config = b"{}"
    registry.push_blob(repo, config)
    registry.push_blob(repo, payload)
    doc = {
        "schemaVersion": 2,
        "mediaType": mf.OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": mf.digest_of(config), "size": 2},
        "layers": [
            {
                "mediaType": cosign.SIMPLE_SIGNING,
                "digest": mf.digest_of(payload),
                "size": len(payload),
                "annotations": {cosign.ANN_SIGNATURE: base64.b64encode(signature).decode()},
            }
        ],
    }
    return registry.push_manifest(repo, mf.canonical_json(doc), mf.OCI_MANIFEST, f"sha256-{image.digest[7:]}.sig")
