"""Promotion: move an image with its whole record from a publisher's registry to a consumer's.

The order is the safety argument:

1. verify the source exactly as `scitt-oci verify SOURCE` would; on REJECT nothing is written;
2. copy, content first: blobs, platform manifests, the image manifest or index, then every referrer
   (statements, signatures, attestations, SBOMs) and cosign's tag-named signatures, all by digest;
3. counter-register each verified upstream Signed Statement at the consumer's transparency service
   and attach the Transparent Statement carrying both receipts;
4. attach the `import` statement (issued by the consumer) naming what was verified;
5. write the tag, last: a tag never names an image whose record has not arrived.

Every step looks before it writes, so a second run writes nothing, and a run killed anywhere is
completed by the next one. Identities come from verified material: the destination's earlier
import statements and counter-signatures count only when our issuer key and the consumer's service
keys verify them.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from scitt_oci.cose.keys import CoseKey
from scitt_oci.errors import PromotionError, ScittOciError
from scitt_oci.oci import manifest as mf
from scitt_oci.oci.manifest import Descriptor
from scitt_oci.oci.reference import Digest, Reference
from scitt_oci.promote.countersign import CounterSigner
from scitt_oci.promote.report import PromotionReport
from scitt_oci.promote.store import ImageStore
from scitt_oci.scitt import profile, receipt, transparent
from scitt_oci.scitt import statement as statement_mod
from scitt_oci.scitt.reasons import VerificationFailure
from scitt_oci.scitt.statement import SignedStatement
from scitt_oci.verify.image import ImageVerdict, attached_statements, decide
from scitt_oci.verify.trust import TrustPolicy

MAX_REFERRER_DEPTH = 3  # referrers of referrers (a signature of an SBOM) and one more
MAX_NODES = 2000
COSIGN_TAG_SUFFIXES = (".sig", ".att", ".sbom")


@dataclass
class Node:
    """A manifest to copy, with what hangs off it."""

    descriptor: Descriptor
    data: bytes
    manifest: mf.Manifest
    children: list[Node] = field(default_factory=list)  # the platform manifests of an index
    referrers: list[Node] = field(default_factory=list)  # manifests whose subject is this one
    tagged: list[tuple[str, Node]] = field(default_factory=list)  # cosign's sha256-<hex>.sig/.att/.sbom

    @property
    def digest(self) -> str:
        return self.descriptor.digest

    def walk(self) -> list[Node]:
        out: list[Node] = [self]
        for n in [*self.children, *self.referrers, *(t[1] for t in self.tagged)]:
            out += n.walk()
        return out


@dataclass
class Verified:
    """An upstream statement that verified under the import policy, and the image it is about."""

    subject: Node
    blob: bytes
    statement: SignedStatement
    event: profile.OciEvent
    entry_digest: str  # SHA-256 of its log entry: the same at every log that registered it


def entry_digest(statement: SignedStatement) -> str:
    """The digest an import names an upstream statement by: SHA-256 of its log entry (RFC 9943 6.3)."""
    return "sha256:" + hashlib.sha256(statement.entry()).hexdigest()


@dataclass
class Promotion:
    """One `promote SOURCE DEST`: the stores, the policy, the consumer's service and issuer."""

    source: ImageStore
    source_ref: Reference  # registry/repository@digest: what the policy's rules match (oci/layout for a layout)
    dest: ImageStore
    dest_ref: Reference  # registry/repository[:tag]: where the import statement says the image is
    policy: TrustPolicy
    # The consumer's service and issuer; without them (a carry into an OCI layout for an air gap) the
    # record is verified and copied, and counter-registered where it arrives at a registry.
    service: CounterSigner | None
    issuer_key: CoseKey | None
    issuer: str | None
    sync: bool = False
    source_name: str | None = None  # how the import and the report name the source (default: source_ref)
    dest_name: str | None = None
    clock: Callable[[], float] = time.time
    report: PromotionReport = field(init=False)

    def __post_init__(self) -> None:
        assert self.source_ref.digest is not None
        self.digest = str(self.source_ref.digest)
        self.source_name = self.source_name or str(self.source_ref)
        self.report = PromotionReport(
            self.source_name, self.dest_name or str(self.dest_ref), self.digest, tag=self.dest_ref.tag
        )
        self._dest_listed: dict[str, set[str]] = {}
        # Every referrer this run put or found at the destination: (subject digest, referrer digest) -> what to put.
        self._expected: dict[tuple[str, str], tuple[Descriptor, bytes, str]] = {}

    # ----- the whole run -----
    def run(self) -> PromotionReport:
        top = self._gather()
        blobs = attached_statements(self.source, self.source_ref)
        verdict = decide(self.source_ref, blobs, self.policy)
        self.report.verdict = verdict
        if not verdict.valid:
            return self.report  # nothing is written
        verified = self._verified(top, blobs, verdict)
        imports, countersigned = self._destination_record()
        wanted = {v.entry_digest for v in verified}
        # Without --sync, an earlier import of this source under this policy means done (but for its tag);
        # with it, a new import is recorded when the statements verified now are not all named by one.
        self.report.import_found = bool(imports)
        covered = any(wanted <= names for names in imports)
        if self.report.import_found and not self.sync:
            self.report.not_synced = sum(1 for n in top.walk()[1:] if not self._dest_has_manifest(n.digest))
            self._write_tag(top)  # an earlier run may have stopped just before it
            return self.report
        self._copy_manifest(top)
        for subject in [top, *top.children]:
            self._copy_referrers(subject, 0)
            self._copy_tagged(subject)
        if self.service is not None:
            for v in verified:
                if (v.subject.digest, v.entry_digest) not in countersigned:
                    self._countersign(v, self.service)
                    countersigned.add((v.subject.digest, v.entry_digest))  # attached twice upstream: once here
            if not covered:
                self._record_import(top, sorted(wanted), self.service)
        self._confirm()
        self._write_tag(top)
        return self.report

    # ----- reading the source -----
    def _fetch(self, digest: str) -> Node:
        fetched = self.source.manifest(self.source.repository, digest)
        if fetched is None:
            raise PromotionError(f"{self.source.name}@{digest} does not exist")
        data, media_type, got = fetched
        parsed = mf.parse(data, media_type)
        return Node(Descriptor(parsed.media_type, got, len(data)), data, parsed)

    def _gather(self) -> Node:
        self._count = 0
        top = self._node(self.digest)
        for subject in [top, *top.children]:
            subject.referrers = self._referrers_of(subject, 0)
            for suffix in COSIGN_TAG_SUFFIXES:
                tag = mf.fallback_tag(subject.digest) + suffix
                fetched = self.source.manifest(self.source.repository, tag)
                if fetched is not None:
                    subject.tagged.append((tag, self._node(fetched[2])))
        return top

    def _node(self, digest: str) -> Node:
        self._count += 1
        if self._count > MAX_NODES:
            raise PromotionError(f"{self.source.name}@{self.digest}: more than {MAX_NODES} manifests to copy")
        node = self._fetch(digest)
        if node.manifest.is_index:
            node.children = [self._node(d.digest) for d in node.manifest.manifests]
        return node

    def _referrers_of(self, subject: Node, depth: int) -> list[Node]:
        if depth >= MAX_REFERRER_DEPTH:
            return []
        out = []
        for d in self.source.referrers(self.source.repository, subject.digest):
            if not self.source.has_manifest(d.digest):
                continue  # listed but gone (deleted after its index entry was written): nothing to copy
            node = self._node(d.digest)
            if node.manifest.subject is None or node.manifest.subject.digest != subject.digest:
                continue  # a foreign entry in a fallback index: not this subject's, not copied
            node.referrers = self._referrers_of(node, depth + 1)
            out.append(node)
        return out

    def _verified(self, top: Node, blobs: list[bytes], verdict: ImageVerdict) -> list[Verified]:
        """The statements that verified: the image's (from its verdict) and each platform manifest's."""
        out: list[Verified] = []
        subjects = [(top, blobs, verdict)]
        for child in top.children:
            ref = self.source_ref.with_digest(Digest.parse(child.digest))
            listed = attached_statements(self.source, ref)
            subjects.append((child, listed, decide(ref, listed, self.policy)))
        for node, found, judged in subjects:
            # decide() judges the blobs in the order given: one result per blob.
            for blob, result in zip(found, judged.statements, strict=False):
                if not result.valid or result.event is None:
                    continue
                stmt = transparent.parse(blob).statement
                out.append(Verified(node, blob, stmt, result.event, entry_digest(stmt)))
        return out

    # ----- what the destination holds -----
    def _dest_listing(self, digest: str) -> set[str]:
        if digest not in self._dest_listed:
            self._dest_listed[digest] = {d.digest for d in self.dest.referrers(self.dest.repository, digest)}
        return self._dest_listed[digest]

    def _dest_has_manifest(self, digest: str) -> bool:
        return self.dest.has_manifest(digest)

    def _destination_record(self) -> tuple[list[set[str]], set[tuple[str, str]]]:
        """(the statement sets named by our verified import statements for this source and policy, the
        (subject, entry digest) pairs already counter-signed by the consumer's service) at the destination."""
        imports: list[set[str]] = []
        countersigned: set[tuple[str, str]] = set()
        if self.service is None:
            return imports, countersigned
        keys = self.service.keys
        dest_digest_ref = self.dest_ref.with_digest(Digest.parse(self.digest))
        subjects = [self.digest]
        if self.dest.has_manifest(self.digest):
            fetched = self.dest.manifest(self.dest.repository, self.digest)
            if fetched is not None:
                subjects += [d.digest for d in mf.parse(fetched[0], fetched[1]).manifests]
        for subject in subjects:
            for blob in attached_statements(self.dest, dest_digest_ref.with_digest(Digest.parse(subject))):
                try:
                    ts = transparent.parse(blob)
                except ScittOciError:
                    continue
                if any(_verifies(r, ts.statement, keys) for r in ts.receipts):
                    countersigned.add((subject, entry_digest(ts.statement)))
                if subject == self.digest and self._our_import(ts.statement):
                    event = profile.read_event(ts.statement)
                    imports.append({str(d) for d in event.upstream})
        return imports, countersigned

    def _our_import(self, statement: SignedStatement) -> bool:
        if self.issuer_key is None:
            return False
        try:
            statement_mod.verify(statement, keys=[self.issuer_key])
            event = profile.check_about(statement, self.digest)
        except ScittOciError:
            return False
        return (
            event.kind is profile.Kind.IMPORT
            and event.detail("source") == self.source_name
            and event.detail("policy") == f"sha256:{self.policy.digest}"
        )

    # ----- writing the destination -----
    def _copy_blob(self, d: Descriptor) -> None:
        if self.dest.has_blob(d.digest):
            return
        if self.dest.mount(d.digest, self.source):
            self.report.blobs_mounted += 1
            return
        data = self.source.blob(self.source.repository, d.digest)
        if data is None:
            raise PromotionError(f"{self.source.name}: blob {d.digest} is missing")
        self.dest.put_blob(data)
        self.report.blobs_copied += 1

    def _copy_content(self, node: Node) -> None:
        """Everything `node`'s manifest names: blobs, or (an index) its manifests."""
        for child in node.children:
            self._copy_manifest(child)
        if not node.manifest.is_index:
            for d in [*([node.manifest.config] if node.manifest.config else []), *node.manifest.layers]:
                self._copy_blob(d)

    def _copy_manifest(self, node: Node) -> None:
        if self.dest.has_manifest(node.digest):
            return
        self._copy_content(node)
        self.dest.put_manifest(node.data, node.descriptor.media_type)
        self.report.manifests_copied.append(node.digest)

    def _put_referrer(self, subject: Descriptor, data: bytes, media_type: str) -> str:
        self.dest.put_referrer(subject, data, media_type)
        digest = mf.digest_of(data)
        self._expected[(subject.digest, digest)] = (subject, data, media_type)
        self._dest_listing(subject.digest).add(digest)
        return digest

    def _confirm(self, rounds: int = 5) -> None:
        """Re-read the destination's referrer listings before the tag is written: another writer (the
        consumer's own watcher, attaching its statements) may have replaced a fallback index meanwhile."""
        for _ in range(rounds):
            self._dest_listed.clear()
            missing = [v for (s, r), v in self._expected.items() if r not in self._dest_listing(s)]
            if not missing:
                return
            for subject, data, media_type in missing:
                self.dest.put_referrer(subject, data, media_type)
        raise PromotionError(
            f"{self.dest.name}: referrers of {self.digest} kept disappearing from the destination's listing; "
            "the tag is not written (run again)"
        )

    def _copy_referrers(self, subject: Node, depth: int) -> None:
        for node in subject.referrers:
            self._expected[(subject.digest, node.digest)] = (subject.descriptor, node.data, node.descriptor.media_type)
            if node.digest not in self._dest_listing(subject.digest) or not self.dest.has_manifest(node.digest):
                self._copy_content(node)
                self._put_referrer(subject.descriptor, node.data, node.descriptor.media_type)
                self.report.referrers_copied.append(node.digest)
            self._copy_referrers(node, depth + 1)

    def _copy_tagged(self, subject: Node) -> None:
        for tag, node in subject.tagged:
            self._copy_manifest(node)
            if self.dest.tag_digest(tag) != node.digest:
                self.dest.put_manifest(node.data, node.descriptor.media_type, tag)
                self.report.tags_copied.append(tag)

    @staticmethod
    def _register(statement: SignedStatement, service: CounterSigner) -> bytes:
        raw = service.register(statement.entry())
        if not _verifies(raw, statement, service.keys):
            raise PromotionError(f"the receipt from {service.identity} does not verify with the keys it publishes")
        return raw

    def _countersign(self, v: Verified, service: CounterSigner) -> None:
        counter = self._register(v.statement, service)
        ts = transparent.add_receipts(v.statement, [counter])
        iat = v.statement.claims.iat if v.statement.claims and v.statement.claims.iat else int(self.clock())
        artifact = mf.statement_artifact(
            v.subject.descriptor,
            ts,
            kind=v.event.kind.value,
            issuer=v.statement.issuer or "",
            service=service.identity,
            created=iat,
        )
        self.dest.put_blob(ts)
        self._put_referrer(v.subject.descriptor, artifact, mf.OCI_MANIFEST)
        self.report.counter_registered.append(v.entry_digest)

    def _record_import(self, top: Node, verified: list[str], service: CounterSigner) -> None:
        assert self.issuer_key is not None and self.issuer is not None and self.source_name is not None
        subject = Reference(self.dest_ref.registry, self.dest_ref.repository, None, Digest.parse(self.digest))
        event = profile.make_import(
            subject,
            source=self.source_name,
            policy=f"sha256:{self.policy.digest}",
            upstream=tuple(Digest.parse(v) for v in verified),
            media_type=top.descriptor.media_type,
        )
        iat = int(self.clock())
        statement = profile.build(self.issuer_key, self.issuer, event, iat=iat)
        ts = transparent.add_receipts(statement, [self._register(statement, service)])
        artifact = mf.statement_artifact(
            top.descriptor, ts, kind=event.kind.value, issuer=self.issuer, service=service.identity, created=iat
        )
        self.dest.put_blob(ts)
        self.report.import_statement = self._put_referrer(top.descriptor, artifact, mf.OCI_MANIFEST)

    def _write_tag(self, top: Node) -> None:
        tag = self.dest_ref.tag
        if tag is None:
            self.dest.keep(top.descriptor)
            return
        current = self.dest.tag_digest(tag)
        if current == top.digest:
            return
        if not self.dest.has_manifest(top.digest):
            raise PromotionError(f"{self.dest.name}@{top.digest} is not there; the tag is not written")
        self.dest.put_manifest(top.data, top.descriptor.media_type, tag)
        self.report.tag_written = True
        self.report.tag_moved_from = current


def _verifies(raw: bytes, statement: SignedStatement, keys: Sequence[CoseKey]) -> bool:
    try:
        receipt.verify_receipt(raw, statement, keys)
    except (VerificationFailure, ScittOciError):
        return False
    return True
