"""A small world for the verify/ unit tests: an in-memory registry, two logs minting real receipts, an
issuer key, a trust policy file naming them, and images with Transparent Statements attached."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from scitt_oci.oci import manifest as mf
from scitt_oci.oci.manifest import Descriptor
from scitt_oci.oci.reference import Digest, Reference
from scitt_oci.scitt import profile, transparent
from tests.helpers import MemoryLog, key
from tests.memregistry import MemRegistry, push_image

HOST = "registry.test"
POLICY = (
    "transparency_services: [{name: a, keys: [{path: a.pem}]}, {name: b, keys: [{path: b.pem}]}]\n"
    "issuers: [{name: w, keys: [{path: issuer.pem}]}]\n"
)


@dataclass
class World:
    root: Path
    registry: MemRegistry
    log: MemoryLog
    other_log: MemoryLog

    @classmethod
    def make(cls, root: Path, *, referrers_api: bool = True) -> World:
        log, other = MemoryLog(key(slot=5), issuer="https://a"), MemoryLog(key(slot=6), issuer="https://b")
        (root / "a.pem").write_bytes(log.signing_key.public_pem())
        (root / "b.pem").write_bytes(other.signing_key.public_pem())
        (root / "issuer.pem").write_bytes(key().public_pem())
        world = cls(root, MemRegistry(HOST, referrers_api=referrers_api), log, other)
        world.write_policy()
        return world

    @property
    def policy_path(self) -> Path:
        return self.root / "policy.yaml"

    def write_policy(self, extra: str = "") -> Path:
        self.policy_path.write_text(POLICY + extra)
        return self.policy_path

    def image(self, repo: str = "acme/app", tag: str | None = "v1", seed: str = "0") -> Descriptor:
        return push_image(self.registry, repo, tag, seed=seed)

    def statement(
        self,
        subject: Reference,
        kind: profile.Kind = profile.Kind.PUSH,
        *,
        iat: int | None = None,
        issuer_key_slot: int = 0,
    ) -> bytes:
        """A Transparent Statement about `subject` (with digest) by the trusted issuer, with a receipt from log a."""
        recorded = Digest.parse("sha256:" + "cd" * 32) if kind in profile.SIGNED_KINDS else None
        event = profile.make_event(kind, subject, recorded_digest=recorded)
        signed = profile.build(key(slot=issuer_key_slot), "https://w", event, iat=iat or int(time.time()))
        return transparent.add_receipts(signed, [self.log.receipt(self.log.add(signed))])

    def attach(self, repo: str, subject: Descriptor, statement: bytes, *, listed_under: str | None = None) -> str:
        """Attach `statement` as a referrer of `subject`; `listed_under`: list it (also) in the fallback index of
        that other digest, as anyone who can push that tag could. Returns the referrer's digest."""
        artifact = mf.statement_artifact(subject, statement, kind="push", issuer="https://w", service="a", created=0)
        digest = self.registry.attach(repo, subject, artifact, [statement])
        if listed_under is not None:
            entry = Descriptor(mf.OCI_MANIFEST, digest, len(artifact), mf.STATEMENT_ARTIFACT)
            self.registry.write_index(repo, listed_under, [entry])
        return digest

    def recorded_image(self, repo: str = "acme/app", tag: str | None = "v1", seed: str = "0") -> Reference:
        """An image pushed, with a valid push statement attached; its reference by digest."""
        desc = self.image(repo, tag, seed)
        ref = Reference.parse(f"{HOST}/{repo}@{desc.digest}")
        self.attach(repo, desc, self.statement(ref))
        return ref
