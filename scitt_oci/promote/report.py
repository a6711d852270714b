"""What a promotion did: the verdict, what was copied, counter-registered and recorded."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from scitt_oci.verify.image import ImageVerdict


@dataclass
class PromotionReport:
    source: str
    destination: str
    digest: str
    verdict: ImageVerdict | None = None
    blobs_copied: int = 0
    blobs_mounted: int = 0  # taken from another repository of the same registry, bytes never downloaded
    manifests_copied: list[str] = field(default_factory=list)
    referrers_copied: list[str] = field(default_factory=list)
    tags_copied: list[str] = field(default_factory=list)
    counter_registered: list[str] = field(default_factory=list)
    import_statement: str | None = None  # the referrer holding it, when attached by this run
    import_found: bool = False  # an earlier run's import record is at the destination
    tag: str | None = None
    tag_written: bool = False
    tag_moved_from: str | None = None
    not_synced: int = 0  # upstream referrers not at the destination, left for --sync

    @property
    def admitted(self) -> bool:
        return self.verdict is not None and self.verdict.valid

    @property
    def changed(self) -> bool:
        return bool(
            self.blobs_copied
            or self.blobs_mounted
            or self.manifests_copied
            or self.referrers_copied
            or self.tags_copied
            or self.counter_registered
            or self.import_statement
            or self.tag_written
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "source": self.source,
            "destination": self.destination,
            "digest": self.digest,
            "decision": "ADMIT" if self.admitted else "REJECT",
            "changed": self.changed,
            "copied": {
                "blobs": self.blobs_copied,
                "blobs_mounted": self.blobs_mounted,
                "manifests": self.manifests_copied,
                "referrers": self.referrers_copied,
                "tags": self.tags_copied,
            },
            "counter_registered": self.counter_registered,
            "import_statement": self.import_statement,
            "already_imported": self.import_found,
            "tag": {"name": self.tag, "written": self.tag_written, "moved_from": self.tag_moved_from},
            "not_synced": self.not_synced,
        }
        if self.verdict is not None:
            out["verification"] = self.verdict.to_json()
        return out
