"""The promotion's rules, between two OCI layouts with receipts from in-memory logs (fast, every edge reachable)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from scitt_oci.cose.keys import CoseKey
from scitt_oci.oci import manifest as mf
from scitt_oci.oci.manifest import Descriptor
from scitt_oci.oci.reference import Digest, Reference
from scitt_oci.promote.layout import LayoutStore
from scitt_oci.promote.promote import Promotion, entry_digest
from scitt_oci.scitt import profile, transparent
from scitt_oci.scitt import statement as statement_mod
from scitt_oci.verify.trust import load_policy
from tests.helpers import MemoryLog, key
from tests.registryproc import oci_layout


@dataclass
class LogSigner:
    """The consumer's service as a `CounterSigner`, minting real receipts."""

    log: MemoryLog
    identity: str = "https://scitt.acme.example"
    keys: Sequence[CoseKey] = field(init=False)

    def __post_init__(self) -> None:
        self.keys = [self.log.signing_key]

    def register(self, statement: bytes) -> bytes:
        return self.log.receipt(self.log.add(statement_mod.parse(statement)))


@dataclass
class Setup:
    source: LayoutStore
    dest: LayoutStore
    digest: str
    subject: Descriptor
    wabbit_log: MemoryLog
    root: Path
    acme_log: MemoryLog

    def statement(self, kind: profile.Kind = profile.Kind.PUSH, *, created: int = 1, iat: int = 1) -> bytes:
        event = profile.make_event(kind, Reference.parse(f"w.example/app@{self.digest}"))
        signed = profile.build(key(slot=0), "https://wabbit.example", event, iat=iat)
        ts = transparent.add_receipts(signed, [self.wabbit_log.receipt(self.wabbit_log.add(signed))])
        self.source.put_blob(ts)
        artifact = mf.statement_artifact(self.subject, ts, kind=kind.value, issuer="w", service="w", created=created)
        self.source.put_referrer(self.subject, artifact, mf.OCI_MANIFEST)
        return ts

    def promotion(self, policy: str = "import.yaml", *, sync: bool = False, log: MemoryLog | None = None) -> Promotion:
        return Promotion(
            self.source,
            Reference("oci", "layout", None, Digest.parse(self.digest)),
            self.dest,
            Reference("acme.example", "imported/app", "1.0"),
            load_policy(self.root / policy),
            LogSigner(log or self.acme_log),
            key(slot=1),
            "https://acme.example",
            sync=sync,
        )


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    digest = oci_layout(tmp_path / "src", "seed")
    source = LayoutStore(tmp_path / "src")
    source.put_blob(mf.EMPTY_BLOB)  # the config of every artifact below
    fetched = source.manifest("", digest)
    assert fetched is not None
    wabbit_log = MemoryLog(key(slot=20), issuer="https://scitt.wabbit.example")
    (tmp_path / "wabbit-ts.pem").write_bytes(wabbit_log.signing_key.public_pem())
    (tmp_path / "wabbit.pem").write_bytes(key(slot=0).public_pem())
    (tmp_path / "other.pem").write_bytes(key(slot=2).public_pem())
    base = "transparency_services: [{name: wabbit, keys: [{path: wabbit-ts.pem}]}]\n"
    (tmp_path / "import.yaml").write_text(base + "issuers: [{name: wabbit, keys: [{path: wabbit.pem}]}]\n")
    (tmp_path / "audit.yaml").write_text(base + "issuers: [{name: o, keys: [{path: other.pem}]}]\nmode: audit\n")
    s = Setup(
        source,
        LayoutStore(tmp_path / "dst", create=True),
        digest,
        Descriptor(fetched[1], digest, len(fetched[0])),
        wabbit_log,
        tmp_path,
        MemoryLog(key(slot=21), issuer="https://scitt.acme.example"),
    )
    return s


def _dest_statements(s: Setup) -> list[transparent.TransparentStatement]:
    out = []
    for d in s.dest.referrers("", s.digest, mf.STATEMENT_ARTIFACT):
        fetched = s.dest.manifest("", d.digest)
        assert fetched is not None
        blob = s.dest.blob("", mf.parse(fetched[0]).layers[0].digest)
        assert blob is not None
        out.append(transparent.parse(blob))
    return out


def test_promotes_counter_registers_records_and_a_second_run_changes_nothing(setup: Setup) -> None:
    ts = setup.statement()
    report = setup.promotion().run()
    assert report.admitted and report.tag_written and len(report.counter_registered) == 1
    assert setup.dest.tag_digest("1.0") == setup.digest
    held = _dest_statements(setup)
    both = [t for t in held if len(t.receipts) == 2]
    assert [entry_digest(t.statement) for t in both] == [entry_digest(transparent.parse(ts).statement)]
    imports = [
        profile.read_event(t.statement) for t in held if profile.read_event(t.statement).kind is profile.Kind.IMPORT
    ]
    assert len(imports) == 1 and imports[0].detail("source") == f"oci/layout@{setup.digest}"
    assert imports[0].subject == Reference("acme.example", "imported/app", None, Digest.parse(setup.digest))
    before = (setup.root / "dst" / "index.json").read_bytes()
    again = setup.promotion().run()
    assert again.admitted and not again.changed and again.import_found
    assert (setup.root / "dst" / "index.json").read_bytes() == before


def test_audit_mode_does_not_let_a_rejected_record_through(setup: Setup) -> None:
    setup.statement()
    report = setup.promotion("audit.yaml").run()
    assert report.verdict is not None and report.verdict.allowed and not report.verdict.valid
    assert not report.admitted and not report.changed
    assert json.loads((setup.root / "dst" / "index.json").read_text())["manifests"] == []
    assert not setup.dest.has_manifest(setup.digest)


def test_a_statement_attached_twice_is_counter_registered_once(setup: Setup) -> None:
    setup.statement()
    event = profile.make_event(profile.Kind.PUSH, Reference.parse(f"w.example/app@{setup.digest}"))
    signed = profile.build(key(slot=0), "https://wabbit.example", event, iat=1)  # the same bytes again
    ts = transparent.add_receipts(signed, [setup.wabbit_log.receipt(0)])
    artifact = mf.statement_artifact(setup.subject, ts, kind="push", issuer="w", service="w", created=2)
    setup.source.put_blob(ts)
    setup.source.put_referrer(setup.subject, artifact, mf.OCI_MANIFEST)
    report = setup.promotion().run()
    assert report.admitted and len(report.counter_registered) == 1, report.to_json()


def test_foreign_and_dangling_entries_are_not_copied(setup: Setup) -> None:
    setup.statement()
    other = Descriptor(mf.OCI_MANIFEST, "sha256:" + "cd" * 32, 10)
    foreign = mf.canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": mf.OCI_MANIFEST,
            "artifactType": "x/y",
            "config": {"mediaType": mf.EMPTY_JSON, "digest": mf.EMPTY_DIGEST, "size": 2},
            "layers": [],
            "subject": other.to_json(),
        }
    )
    setup.source.put_blob(foreign)
    index = mf.empty_index()
    index["manifests"] = [
        {"mediaType": mf.OCI_MANIFEST, "digest": mf.digest_of(foreign), "size": len(foreign)},  # another subject's
        {"mediaType": mf.OCI_MANIFEST, "digest": "sha256:" + "ee" * 32, "size": 5},  # listed, never stored
    ]
    setup.source.put_manifest(mf.canonical_json(index), mf.OCI_INDEX, mf.fallback_tag(setup.digest))
    report = setup.promotion().run()
    assert report.admitted
    assert mf.digest_of(foreign) not in report.referrers_copied and not setup.dest.has_manifest(mf.digest_of(foreign))


def test_sync_brings_a_later_statement_and_records_a_new_import(setup: Setup) -> None:
    setup.statement()
    setup.promotion().run()
    setup.statement(profile.Kind.DEPLOY, created=5, iat=5)
    plain = setup.promotion().run()
    assert not plain.changed and plain.not_synced == 1
    synced = setup.promotion(sync=True).run()
    assert len(synced.counter_registered) == 1 and synced.import_statement and len(synced.referrers_copied) == 1
    assert not setup.promotion(sync=True).run().changed
