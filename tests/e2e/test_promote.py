"""Wabbit -> ACME: two real registries, two scitt-oci instances, `scitt-oci promote` between them.

The publisher watches registry W and records what is pushed there; the consumer watches registry A.
Promotion verifies the publisher's record, copies the image with every referrer, counter-registers
the publisher's statements at the consumer's service and records the import.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from scitt_oci.cose import algorithms, headers, keys
from scitt_oci.oci import manifest as mf
from scitt_oci.oci.client import RegistryClient, RegistrySettings
from scitt_oci.oci.reference import Digest, Reference
from scitt_oci.promote.promote import entry_digest
from scitt_oci.scitt import profile, transparent
from scitt_oci.verify.image import attached_statements
from scitt_oci.verify.trust import load_policy
from tests.registryproc import (
    RegistryProcess,
    notation_manifest,
    oci_layout,
    push_cosign_signature,
    require,
    skopeo_push,
    wait_statements,
    watched_registry,
)
from tests.serverproc import ServerProcess, service_keys

SECRET = "test-webhook-secret-0123456789"
ISSUER = "https://acme-rockets.example"


@dataclass
class Party:
    server: ServerProcess
    registry: RegistryProcess
    client: RegistryClient


@dataclass
class World:
    root: Path
    wabbit: Party
    acme: Party

    def policy(self, name: str, text: str) -> Path:
        path = self.root / f"{name}.yaml"
        path.write_text(text)
        return path


def _party(root: Path, name: str, env: dict[str, str]) -> Party:
    server = ServerProcess(root / f"{name}-data", env=env)
    registry = watched_registry(root, server, SECRET, f"{name}-")
    server.start()
    service_keys(root, server, f"{name}-")
    return Party(server, registry, RegistryClient(RegistrySettings.for_url(registry.url)))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("promote")
    wabbit = _party(root, "wabbit", {})
    # ACME's service registers statements signed by Wabbit's issuer key (and its own).
    acme = _party(root, "acme", {"SCITT_OCI_REGISTRATION__ISSUER_KEYS": json.dumps([str(root / "wabbit-issuer.pem")])})
    other = keys.generate(algorithms.by_name("ES256"))
    (root / "stranger.pem").write_bytes(other.public_pem())
    w = World(root, wabbit, acme)
    w.policy("import", IMPORT_POLICY)
    w.policy("admit", _admission("acme-ts.cbor"))
    w.policy("no-acme", _admission("stranger.pem"))
    w.policy("stranger", IMPORT_POLICY.replace("wabbit-issuer.pem", "stranger.pem"))
    yield w
    for party in (wabbit, acme):
        party.server.stop()
        party.registry.stop()


IMPORT_POLICY = """transparency_services: [{name: wabbit, keys: [{path: wabbit-ts.cbor}]}]
issuers: [{name: wabbit, keys: [{path: wabbit-issuer.pem}]}]
"""


def _admission(acme_keys: str) -> str:
    return (
        "transparency_services:\n"
        "  - {name: wabbit, keys: [{path: wabbit-ts.cbor}]}\n"
        f"  - {{name: acme, keys: [{{path: {acme_keys}}}]}}\n"
        "issuers: [{name: wabbit, keys: [{path: wabbit-issuer.pem}]}, {name: acme, keys: [{path: acme-issuer.pem}]}]\n"
        "require: {receipts: {all: [wabbit, acme]}}\n"
    )


def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "scitt_oci", *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def promote_args(w: World, source: str, dest: str, policy: Path, *extra: str) -> list[str]:
    return [
        "promote",
        source,
        dest,
        "--trust",
        str(policy),
        "--ts",
        w.acme.server.url,
        "--issuer-key",
        str(w.acme.server.data_dir / "keys" / "issuer.pem"),
        "--issuer",
        ISSUER,
        "--registry-insecure",
        "--output",
        "json",
        *extra,
    ]


def promote(w: World, source: str, dest: str, policy: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    done = cli(*promote_args(w, source, dest, policy, *extra))
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, json.loads(done.stdout)


def recorded(party: Party, repo: str, digest: str, count: int, timeout: float = 30) -> list[str]:
    """The referrers of `digest` once `count` statements are attached (polling the registry)."""
    found = wait_statements(party.client, repo, digest, count, timeout=timeout, output=party.server.output)
    assert len(found) >= count, f"{len(found)} statements on {digest}: {party.server.output()[-2000:]}"
    return [d.digest for d in party.client.referrers(repo, digest)]


def _sign(party: Party, repo: str, digest: str) -> tuple[str, str]:
    """A Notation signature referrer and an SBOM referrer of `digest` (and a cosign classic .sig tag)."""
    image = party.client.head_manifest(repo, digest)
    assert image is not None
    notation = notation_manifest(party.client, repo, image)
    party.client.push_blob(repo, mf.EMPTY_BLOB)
    notation_digest, _ = party.client.push_manifest(repo, notation, mf.OCI_MANIFEST)
    party.client.attach(repo, image, notation, [])
    # One writer at a time on the tag-schema index: wait for the watcher's signature statement first.
    recorded(party, repo, digest, 2)
    sbom_body = b'{"spdxVersion": "SPDX-2.3", "name": "net-monitor"}'
    sbom_blob = party.client.push_blob(repo, sbom_body)
    sbom = mf.canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": mf.OCI_MANIFEST,
            "artifactType": "application/spdx+json",
            "config": {"mediaType": mf.EMPTY_JSON, "digest": mf.EMPTY_DIGEST, "size": 2},
            "layers": [{"mediaType": "application/spdx+json", "digest": sbom_blob, "size": len(sbom_body)}],
            "subject": image.to_json(),
        }
    )
    sbom_digest = party.client.attach(repo, image, sbom, [])
    push_cosign_signature(party.client, repo, digest, base64.b64decode("MEUCIQ=="), f"{party.registry.host}/{repo}")
    return notation_digest, sbom_digest


def _statements(client: RegistryClient, registry: str, repo: str, digest: str) -> list[bytes]:
    return attached_statements(client, Reference(registry, repo, None, Digest.parse(digest)))


@pytest.fixture(scope="module")
def published(world: World) -> tuple[str, list[str]]:
    """net-monitor at Wabbit: a two-platform index, recorded, signed (Notation, cosign) and with an SBOM."""
    w = world
    digest = oci_layout(w.root / "net-monitor", "net-monitor", multi_arch=True)
    skopeo_push(w.root / "net-monitor", w.wabbit.registry, "wabbit/net-monitor", all_platforms=True)
    recorded(w.wabbit, "wabbit/net-monitor", digest, 1)
    notation, sbom = _sign(w.wabbit, "wabbit/net-monitor", digest)
    referrers = recorded(w.wabbit, "wabbit/net-monitor", digest, 3)  # push + notation + cosign statements
    assert notation in referrers and sbom in referrers
    return digest, referrers


def test_promote_copies_the_image_and_its_whole_record(world: World, published: tuple[str, list[str]]) -> None:
    w, (digest, upstream) = world, published
    source = f"{w.wabbit.registry.host}/wabbit/net-monitor@{digest}"
    acme, repo = w.acme.client, "acme/net-monitor"
    # ACME already lists a note of its own about this digest: the merge must keep it
    image = w.wabbit.client.head_manifest("wabbit/net-monitor", digest)
    assert image is not None
    note = mf.canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": mf.OCI_MANIFEST,
            "artifactType": "application/vnd.acme.review+json",
            "config": {"mediaType": mf.EMPTY_JSON, "digest": mf.EMPTY_DIGEST, "size": 2},
            "layers": [{"mediaType": mf.EMPTY_JSON, "digest": mf.EMPTY_DIGEST, "size": 2}],
            "subject": image.to_json(),
        }
    )
    note_digest = acme.attach(repo, image, note, [])
    code, report = promote(w, source, f"{w.acme.registry.host}/acme/net-monitor:1.0", w.root / "import.yaml")
    assert code == 0 and report["decision"] == "ADMIT", report
    assert note_digest in {d.digest for d in acme.referrers(repo, digest)}
    # the same digest, byte for byte, every platform manifest, the tag last
    assert acme.manifest(repo, digest) == w.wabbit.client.manifest("wabbit/net-monitor", digest)
    fetched = acme.manifest(repo, digest)
    assert fetched is not None
    index = json.loads(fetched[0])
    for platform in index["manifests"]:
        assert acme.head_manifest(repo, platform["digest"]) is not None
        upstream_here = {d.digest for d in w.wabbit.client.referrers("wabbit/net-monitor", platform["digest"])}
        assert upstream_here and upstream_here <= {d.digest for d in acme.referrers(repo, platform["digest"])}
    tagged = acme.head_manifest(repo, "1.0")
    assert tagged is not None and tagged.digest == digest
    # every upstream referrer, and cosign's tag-named signature
    here = {d.digest for d in acme.referrers(repo, digest)}
    assert set(upstream) <= here
    sig = w.wabbit.client.head_manifest("wabbit/net-monitor", mf.fallback_tag(digest) + ".sig")
    assert sig is not None and acme.head_manifest(repo, mf.fallback_tag(digest) + ".sig") == sig
    # each verified upstream statement is at ACME with both receipts
    upstream_statements = _statements(w.wabbit.client, w.wabbit.registry.host, "wabbit/net-monitor", digest)
    entries = {entry_digest(transparent.parse(b).statement) for b in upstream_statements}
    assert len(entries) == 3 and sorted(report["counter_registered"]) == sorted(
        entries
        | {
            entry_digest(transparent.parse(b).statement)
            for p in index["manifests"]
            for b in _statements(w.wabbit.client, w.wabbit.registry.host, "wabbit/net-monitor", p["digest"])
        }
    )
    at_acme = [transparent.parse(b) for b in _statements(acme, w.acme.registry.host, repo, digest)]
    both = [t for t in at_acme if len(t.receipts) == 2]
    assert {entry_digest(t.statement) for t in both} == entries
    # the import record: issued by ACME, naming the source, the statements and the policy
    imports = [
        profile.read_event(t.statement) for t in at_acme if profile.read_event(t.statement).kind is profile.Kind.IMPORT
    ]
    assert len(imports) == 1
    event = imports[0]
    assert (
        event.detail("source") == source
        and event.detail("policy") == "sha256:" + load_policy(w.root / "import.yaml").digest
    )
    assert {str(d) for d in event.upstream} >= entries


def test_consumer_admission_requires_receipts_from_both_services(
    world: World, published: tuple[str, list[str]]
) -> None:
    w, (digest, _) = world, published
    image = f"{w.acme.registry.host}/acme/net-monitor@{digest}"
    admit = cli("verify", image, "--trust", str(w.root / "admit.yaml"), "--registry-insecure")
    assert admit.returncode == 0 and admit.stdout.startswith("ADMIT"), admit.stdout + admit.stderr
    # the consumer's service key left out (another key in its place): nothing carries its receipt
    reject = cli("verify", image, "--trust", str(w.root / "no-acme.yaml"), "--registry-insecure")
    assert reject.returncode == 1 and reject.stdout.startswith("REJECT"), reject.stdout
    # at the publisher, the same image has only Wabbit's receipts
    upstream = f"{w.wabbit.registry.host}/wabbit/net-monitor@{digest}"
    assert cli("verify", upstream, "--trust", str(w.root / "admit.yaml"), "--registry-insecure").returncode == 1


def test_a_second_run_changes_nothing(world: World, published: tuple[str, list[str]]) -> None:
    w, (digest, _) = world, published
    source = f"{w.wabbit.registry.host}/wabbit/net-monitor@{digest}"
    dest = f"{w.acme.registry.host}/acme/net-monitor:1.0"
    for extra in ((), ("--sync",)):
        code, report = promote(w, source, dest, w.root / "import.yaml", *extra)
        assert code == 0 and report["changed"] is False and report["already_imported"] is True, report


def test_sync_brings_referrers_added_upstream(world: World, published: tuple[str, list[str]]) -> None:
    w, (digest, _) = world, published
    source = f"{w.wabbit.registry.host}/wabbit/net-monitor@{digest}"
    dest = f"{w.acme.registry.host}/acme/net-monitor:1.0"
    image = w.wabbit.client.head_manifest("wabbit/net-monitor", digest)
    assert image is not None
    body = b"\xd2\x84\x40\xa0\xf6\x41\x01"  # a second Notation signature, pushed after the promotion
    blob = w.wabbit.client.push_blob("wabbit/net-monitor", body)
    later = mf.canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": mf.OCI_MANIFEST,
            "artifactType": mf.NOTATION_SIGNATURE,
            "config": {"mediaType": mf.EMPTY_JSON, "digest": mf.EMPTY_DIGEST, "size": 2},
            "layers": [{"mediaType": "application/cose", "digest": blob, "size": len(body)}],
            "subject": image.to_json(),
        }
    )
    later_digest = w.wabbit.client.attach("wabbit/net-monitor", image, later, [])
    recorded(w.wabbit, "wabbit/net-monitor", digest, 4)
    code, plain = promote(w, source, dest, w.root / "import.yaml")
    assert code == 0 and plain["changed"] is False and plain["not_synced"] >= 2, plain
    code, synced = promote(w, source, dest, w.root / "import.yaml", "--sync")
    assert code == 0 and later_digest in synced["copied"]["referrers"], synced
    assert len(synced["counter_registered"]) == 1 and synced["import_statement"], synced
    assert later_digest in {d.digest for d in w.acme.client.referrers("acme/net-monitor", digest)}
    code, again = promote(w, source, dest, w.root / "import.yaml", "--sync")
    assert code == 0 and again["changed"] is False, again


def _single(w: World, repo: str, seed: str) -> str:
    digest = oci_layout(w.root / seed, seed)
    skopeo_push(w.root / seed, w.wabbit.registry, repo)
    recorded(w.wabbit, repo, digest, 1)
    return digest


def _nothing_at(w: World, repo: str, digest: str, tag: str) -> None:
    assert w.acme.client.head_manifest(repo, digest) is None
    assert w.acme.client.head_manifest(repo, tag) is None
    assert w.acme.client.referrers(repo, digest) == []


def test_a_policy_that_does_not_trust_the_publisher_copies_nothing(world: World) -> None:
    w = world
    digest = _single(w, "wabbit/untrusted", "untrusted")
    policy = w.root / "stranger.yaml"
    code, report = promote(
        w, f"{w.wabbit.registry.host}/wabbit/untrusted@{digest}", f"{w.acme.registry.host}/acme/untrusted:1", policy
    )
    assert code == 1 and report["decision"] == "REJECT" and report["changed"] is False
    assert "UNTRUSTED_ISSUER" in json.dumps(report["verification"]["reasons"])
    text = cli(
        *promote_args(
            w, f"{w.wabbit.registry.host}/wabbit/untrusted@{digest}", f"{w.acme.registry.host}/acme/untrusted:1", policy
        )[:-2]
    )
    assert (
        text.returncode == 1 and text.stdout.startswith("REJECT: nothing copied") and "UNTRUSTED_ISSUER" in text.stdout
    )
    _nothing_at(w, "acme/untrusted", digest, "1")


def test_a_tampered_upstream_receipt_copies_nothing(world: World) -> None:
    w, repo = world, "wabbit/tampered"
    digest = _single(w, repo, "tampered")
    blob = _statements(w.wabbit.client, w.wabbit.registry.host, repo, digest)[0]
    ts = transparent.parse(blob)
    receipt = bytearray(ts.receipts[0])
    receipt[-1] ^= 1  # the last byte of the receipt's signature
    forged = ts.statement.message.with_unprotected({headers.RECEIPTS: [bytes(receipt)]}).encode()
    image = w.wabbit.client.head_manifest(repo, digest)
    assert image is not None
    artifact = mf.statement_artifact(image, forged, kind="push", issuer="x", service="y", created=0)
    w.wabbit.client.push_blob(repo, forged)
    forged_digest, _ = w.wabbit.client.push_manifest(repo, artifact, mf.OCI_MANIFEST)
    index = mf.empty_index()
    index["manifests"] = [mf.Descriptor(mf.OCI_MANIFEST, forged_digest, len(artifact), mf.STATEMENT_ARTIFACT).to_json()]
    w.wabbit.client.push_manifest(repo, mf.canonical_json(index), mf.OCI_INDEX, mf.fallback_tag(digest))
    code, report = promote(
        w,
        f"{w.wabbit.registry.host}/{repo}@{digest}",
        f"{w.acme.registry.host}/acme/tampered:1",
        w.root / "import.yaml",
    )
    assert code == 1 and report["decision"] == "REJECT" and report["changed"] is False
    reasons = json.dumps(report["verification"])
    assert "BAD_RECEIPT_SIGNATURE" in reasons or "TAMPERED_INCLUSION_PATH" in reasons, reasons
    _nothing_at(w, "acme/tampered", digest, "1")


def _import_at(w: World, repo: str, digest: str) -> bool:
    return any(
        profile.read_event(transparent.parse(b).statement).kind is profile.Kind.IMPORT
        for b in _statements(w.acme.client, w.acme.registry.host, repo, digest)
    )


def _countersigned_at(w: World, repo: str, digest: str) -> bool:
    return any(
        len(transparent.parse(b).receipts) == 2 for b in _statements(w.acme.client, w.acme.registry.host, repo, digest)
    )


@pytest.mark.parametrize("when", ["image", "countersigned"])
def test_sigkill_mid_promote_never_leaves_the_tag_without_the_record(world: World, when: str) -> None:
    """SIGKILL once the image has arrived, or once the first counter-signed statement has; then run again."""
    w, repo = world, f"acme/killed-{when}"
    digest = _single(w, f"wabbit/killed-{when}", f"killed-{when}")
    _sign(w.wabbit, f"wabbit/killed-{when}", digest)
    recorded(w.wabbit, f"wabbit/killed-{when}", digest, 3)
    source = f"{w.wabbit.registry.host}/wabbit/killed-{when}@{digest}"
    args = promote_args(w, source, f"{w.acme.registry.host}/{repo}:1", w.root / "import.yaml")
    proc = subprocess.Popen(
        [sys.executable, "-m", "scitt_oci", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    arrived: Callable[[], bool] = (
        (lambda: w.acme.client.head_manifest(repo, digest) is not None)
        if when == "image"
        else (lambda: _countersigned_at(w, repo, digest))
    )
    deadline = time.monotonic() + 60
    while proc.poll() is None and not arrived():  # no sleep: the window before the tag is short
        assert time.monotonic() < deadline, "the promotion never got there"
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)
    tagged = w.acme.client.head_manifest(repo, "1")
    assert tagged is None or (tagged.digest == digest and _import_at(w, repo, digest))
    code, report = promote(w, source, f"{w.acme.registry.host}/{repo}:1", w.root / "import.yaml")
    assert code == 0, report
    tagged = w.acme.client.head_manifest(repo, "1")
    assert tagged is not None and tagged.digest == digest
    assert _import_at(w, repo, digest)
    admit = cli(
        "verify",
        f"{w.acme.registry.host}/{repo}@{digest}",
        "--trust",
        str(w.root / "admit.yaml"),
        "--registry-insecure",
    )
    assert admit.returncode == 0, admit.stdout


def test_verify_after_skopeo_copy_which_drops_artifact_types(
    world: World, published: tuple[str, list[str]], tmp_path: Path
) -> None:
    """`skopeo copy --all` of the image and of its tag-schema index: entries arrive without artifactType.

    The copy goes to a registry no watcher writes to: skopeo replaces the index whole, so a watcher
    attaching its own statements at the same moment could race it (Distribution ignores If-Match)."""
    w, (digest, _) = world, published
    plain = RegistryProcess(tmp_path / "registry").start()
    try:
        _verify_after_skopeo_copy(w, digest, plain)
    finally:
        plain.stop()


def _verify_after_skopeo_copy(w: World, digest: str, plain: RegistryProcess) -> None:
    src, dst = f"{w.wabbit.registry.host}/wabbit/net-monitor", f"{plain.host}/acme/skopeo"
    base = [require("skopeo"), "copy", "--all", "--src-tls-verify=false", "--dest-tls-verify=false"]
    tag = mf.fallback_tag(digest)
    for source, dest in ((f"{src}@{digest}", f"{dst}:copied"), (f"{src}:{tag}", f"{dst}:{tag}")):
        done = subprocess.run(
            [*base, f"docker://{source}", f"docker://{dest}"], capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, done.stderr
    fetched = RegistryClient(RegistrySettings.for_url(plain.url)).manifest("acme/skopeo", mf.fallback_tag(digest))
    assert fetched is not None
    entries = json.loads(fetched[0])["manifests"]
    assert entries and not any("artifactType" in e for e in entries)  # what skopeo leaves
    verdict = cli("verify", f"{dst}@{digest}", "--trust", str(w.root / "import.yaml"), "--registry-insecure")
    assert verdict.returncode == 0 and verdict.stdout.startswith("ADMIT"), verdict.stdout + verdict.stderr


def test_across_an_air_gap_through_an_oci_layout(world: World, published: tuple[str, list[str]]) -> None:
    """W -> oci:DIR (verified, copied, nothing registered) -> A (verified again, counter-registered)."""
    w, (digest, upstream) = world, published
    layout = w.root / "carried"
    carry = cli(
        "promote",
        f"{w.wabbit.registry.host}/wabbit/net-monitor@{digest}",
        f"oci:{layout}:1.0",
        "--trust",
        str(w.root / "import.yaml"),
        "--registry-insecure",
        "--output",
        "json",
    )
    assert carry.returncode == 0, carry.stderr
    carried = json.loads(carry.stdout)
    assert carried["counter_registered"] == [] and carried["import_statement"] is None
    assert set(upstream) <= set(carried["copied"]["referrers"])
    # skopeo reads the layout as an image layout
    inspect = subprocess.run(
        [require("skopeo"), "inspect", "--raw", f"oci:{layout}:1.0"], capture_output=True, check=False
    )
    assert inspect.returncode == 0 and mf.digest_of(inspect.stdout) == digest, inspect.stderr
    code, report = promote(w, f"oci:{layout}:1.0", f"{w.acme.registry.host}/acme/airgap:1.0", w.root / "import.yaml")
    assert code == 0 and report["decision"] == "ADMIT", report
    # the same statements, the same verdicts, as read from the registry
    judged = sorted(json.dumps(s, sort_keys=True) for s in report["verification"]["statements"])
    assert judged == sorted(json.dumps(s, sort_keys=True) for s in carried["verification"]["statements"])
    assert (
        report["import_statement"]
        and len(report["counter_registered"]) == len(carried["verification"]["statements"]) + 2
    )
    tagged = w.acme.client.head_manifest("acme/airgap", "1.0")
    assert tagged is not None and tagged.digest == digest
    admit = cli(
        "verify",
        f"{w.acme.registry.host}/acme/airgap@{digest}",
        "--trust",
        str(w.root / "admit.yaml"),
        "--registry-insecure",
    )
    assert admit.returncode == 0, admit.stdout
    # a second carry into the layout changes nothing; a policy not trusting Wabbit copies nothing out of it
    again = cli(
        "promote",
        f"{w.wabbit.registry.host}/wabbit/net-monitor@{digest}",
        f"oci:{layout}:1.0",
        "--trust",
        str(w.root / "import.yaml"),
        "--registry-insecure",
        "--output",
        "json",
    )
    assert again.returncode == 0 and json.loads(again.stdout)["changed"] is False
    code, refused = promote(
        w, f"oci:{layout}@{digest}", f"{w.acme.registry.host}/acme/airgap2:1", w.root / "stranger.yaml"
    )
    assert code == 1 and refused["changed"] is False
    _nothing_at(w, "acme/airgap2", digest, "1")


def test_within_one_registry_blobs_are_mounted_not_downloaded(world: World, published: tuple[str, list[str]]) -> None:
    w, (digest, _) = world, published
    code, report = promote(
        w,
        f"{w.wabbit.registry.host}/wabbit/net-monitor@{digest}",
        f"{w.wabbit.registry.host}/wabbit/mirror:1.0",
        w.root / "import.yaml",
    )
    assert code == 0 and report["copied"]["blobs"] == 0 and report["copied"]["blobs_mounted"] >= 4, report["copied"]
    tagged = w.wabbit.client.head_manifest("wabbit/mirror", "1.0")
    assert tagged is not None and tagged.digest == digest
