"""No webhooks: backfill, periodic reconciliation, `history`, and dead letters."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import requests

from scitt_oci.oci import manifest as mf
from scitt_oci.oci.client import RegistryClient, RegistrySettings
from tests.registryproc import RegistryProcess, oci_layout, skopeo_push, wait_statements
from tests.serverproc import ServerProcess


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-m", "scitt_oci", *args],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **(env or {})},
    )


def test_backfill_is_resumable_and_history_shows_the_record(tmp_path: Path) -> None:
    registry = RegistryProcess(tmp_path / "registry").start()
    try:
        digests = [oci_layout(tmp_path / f"img{i}", f"bf{i}") for i in range(2)]
        for i in range(2):
            skopeo_push(tmp_path / f"img{i}", registry, f"team/app{i}")
        data = str(tmp_path / "data")
        first = cli("backfill", registry.host, "--data-dir", data, "--registry-insecure")
        assert first.returncode == 0, first.stderr
        assert "found 2 manifests not on record; queued 2; recorded 2" in first.stdout
        again = cli("backfill", f"{registry.host}/team/app0", "--data-dir", data, "--registry-insecure")
        assert again.returncode == 0 and "found 0 manifests not on record" in again.stdout
        client = RegistryClient(RegistrySettings.for_url(registry.url))
        assert len(client.referrers("team/app1", digests[1], mf.STATEMENT_ARTIFACT)) == 1
        shown = cli("history", f"{registry.host}/team/app0@{digests[0]}", "--registry-insecure", "--output", "json")
        doc = json.loads(shown.stdout)
        assert [r["kind"] for r in doc["records"]] == ["push"] and doc["records"][0]["receipts"][0]["tree_size"] >= 1
        tagged = cli("history", f"{registry.host}/team/app1:v1", "--registry-insecure")
        assert "1 record(s)" in tagged.stdout and "push" in tagged.stdout and "is a tag" in tagged.stderr
    finally:
        registry.stop()


def test_backfill_names_what_it_could_not_record_and_queues_its_dead_letters_again(tmp_path: Path) -> None:
    """An image whose event dead-letters is named and the exit code is 1; the next backfill queues that
    dead letter again instead of skipping it as already queued."""
    registry = RegistryProcess(tmp_path / "registry").start()
    try:
        digest = oci_layout(tmp_path / "img", "dead")
        skopeo_push(tmp_path / "img", registry, "team/app")
        data = str(tmp_path / "data")
        down = {"SCITT_OCI_WATCH__MAX_ATTEMPTS": "1", "SCITT_OCI_WATCH__TRANSPARENCY_SERVICE": "http://127.0.0.1:1"}
        failed = cli("backfill", registry.host, "--data-dir", data, "--registry-insecure", env=down)
        assert failed.returncode == 1, failed.stdout + failed.stderr
        assert "queued 1; recorded 0" in failed.stdout
        assert f"not repaired: {registry.host}/team/app@{digest}: not recorded: ClientError" in failed.stderr
        assert "dead-letters --retry" in failed.stderr and "1 image(s) could not be read or repaired" in failed.stderr
        again = cli("backfill", registry.host, "--data-dir", data, "--registry-insecure")
        assert again.returncode == 0, again.stderr
        assert "found 1 manifests not on record; queued 1; recorded 1" in again.stdout
        client = RegistryClient(RegistrySettings.for_url(registry.url))
        assert len(client.referrers("team/app", digest, mf.STATEMENT_ARTIFACT)) == 1
    finally:
        registry.stop()


def test_periodic_reconciliation_catches_what_no_webhook_said(tmp_path: Path) -> None:
    registry = RegistryProcess(tmp_path / "registry").start()
    server = ServerProcess(
        tmp_path / "data",
        args=["--registry", registry.host, "--registry-insecure"],
        env={"SCITT_OCI_WATCH__POLL_INTERVAL_SECONDS": "0.3"},
    ).start()
    try:
        digest = oci_layout(tmp_path / "img", "poll")
        skopeo_push(tmp_path / "img", registry, "quiet/app")
        client = RegistryClient(RegistrySettings.for_url(registry.url))
        wait_statements(client, "quiet/app", digest, output=server.output)
        assert len(client.referrers("quiet/app", digest, mf.STATEMENT_ARTIFACT)) == 1
    finally:
        server.stop()
        registry.stop()


def test_dead_letters_are_listed_with_their_reason_and_can_be_retried(tmp_path: Path) -> None:
    registry = RegistryProcess(tmp_path / "registry").start()
    server = ServerProcess(
        tmp_path / "data",
        args=["--registry", registry.host, "--registry-insecure"],
        env={"SCITT_OCI_WATCH__MAX_ATTEMPTS": "1"},
    ).start()
    try:
        secret = (server.data_dir / "webhook-secret").read_text().strip()
        missing = "sha256:" + "ee" * 32
        r = requests.post(
            server.url + "/webhooks/generic",
            json={"repository": "ghost", "digest": missing},
            headers={"Authorization": f"Bearer {secret}"},
            timeout=5,
        )
        assert r.status_code == 202
        deadline = time.monotonic() + 20
        while 'scitt_watch_events{state="dead"} 1.0' not in requests.get(server.url + "/metrics", timeout=5).text:
            assert time.monotonic() < deadline, "the event was not dead-lettered"
            time.sleep(0.05)
        listed = cli("watch", "dead-letters", "--data-dir", str(server.data_dir))
        assert "ghost@" + missing in listed.stdout and "not in the registry" in listed.stdout
        assert (
            "1 event(s) queued again"
            in cli("watch", "dead-letters", "--data-dir", str(server.data_dir), "--retry").stdout
        )
    finally:
        server.stop()
        registry.stop()


def test_backfill_history_and_verify_build_registry_clients_alike(tmp_path: Path) -> None:
    """A URL target, a configured `insecure: true` registry, and the loopback rule for plain HTTP."""
    registry = RegistryProcess(tmp_path / "registry").start()
    try:
        digest = oci_layout(tmp_path / "img", "alike")
        skopeo_push(tmp_path / "img", registry, "team/url")
        skopeo_push(tmp_path / "img", registry, "team/conf")
        # `backfill http://HOST:PORT/REPO` once requested https://http:/v2/...
        by_url = cli(
            "backfill", f"http://{registry.host}/team/url", "--data-dir", str(tmp_path / "a"), "--registry-insecure"
        )
        assert by_url.returncode == 0 and "found 1 manifests not on record" in by_url.stdout, by_url.stderr
        # A configured registry's `insecure: true` holds without the flag (it was dropped for https).
        (tmp_path / "conf").mkdir()
        (tmp_path / "conf" / "scitt-oci.yaml").write_text(
            f"data_dir: data\nwatch: {{registries: [{{url: '{registry.host}', insecure: true}}]}}\n"
        )
        configured = cli(
            "backfill", f"{registry.host}/team/conf", "--config", str(tmp_path / "conf" / "scitt-oci.yaml")
        )
        assert configured.returncode == 0 and "found 1 manifests not on record" in configured.stdout, configured.stderr
        assert (tmp_path / "conf" / "data" / "watch.db").exists()  # data_dir relative to the file's folder
        # An http:// URL without the flag is refused by the same rule as `serve`.
        unflagged = cli("backfill", f"http://{registry.host}", "--data-dir", str(tmp_path / "b"))
        assert unflagged.returncode == 2 and "--registry-insecure" in unflagged.stderr
        # TLS to a plain-HTTP registry names the flag that fixes it.
        policy = tmp_path / "p.yaml"
        (tmp_path / "k.pem").write_bytes((tmp_path / "a" / "keys" / "issuer.pem").read_bytes())
        policy.write_text("transparency_services: [{name: x, keys: [{path: k.pem}]}]\n")
        tls = cli("verify", f"{registry.host}/team/url@{digest}", "--trust", str(policy))
        assert tls.returncode == 2 and "does not speak TLS" in tls.stderr and "--registry-insecure" in tls.stderr
        shown = cli("history", f"{registry.host}/team/url@{digest}")
        assert shown.returncode == 2 and "--registry-insecure" in shown.stderr
    finally:
        registry.stop()
    # Plain HTTP only to loopback registries: `history` refuses as `verify` does, before any request.
    for command in (["history"], ["verify", "--trust", str(policy)]):
        far = cli(*command, f"registry.example.com/app@{digest}", "--registry-insecure")
        assert far.returncode == 2 and "plain HTTP is allowed for loopback registries only" in far.stderr, far.stderr


def test_backfill_repairs_the_rest_when_an_index_tag_was_taken_over(tmp_path: Path) -> None:
    """An image pushed onto one image's fallback index tag used to stop backfill at that image (exit 2):
    the other images' dropped entries were never listed again. Now every other image is repaired, the
    one that cannot be is named with the reason, and the exit code is 1."""
    registry = RegistryProcess(tmp_path / "registry").start()
    try:
        digests = [oci_layout(tmp_path / f"img{i}", f"to{i}") for i in range(2)]
        for i in range(2):
            skopeo_push(tmp_path / f"img{i}", registry, f"team/app{i}")
        data = str(tmp_path / "data")
        first = cli("backfill", registry.host, "--data-dir", data, "--registry-insecure")
        assert first.returncode == 0, first.stderr
        client = RegistryClient(RegistrySettings.for_url(registry.url))
        # app0's index tag now names an image; app1's index was rewritten without our statement.
        skopeo_push(tmp_path / "img1", registry, "team/app0", mf.fallback_tag(digests[0]))
        client.push_manifest(
            "team/app1", mf.canonical_json(mf.empty_index()), mf.OCI_INDEX, mf.fallback_tag(digests[1])
        )
        assert client.referrers("team/app1", digests[1]) == []
        again = cli("backfill", registry.host, "--data-dir", data, "--registry-insecure")
        assert again.returncode == 1, again.stderr
        assert "re-attached 1 missing referrers" in again.stdout, again.stdout
        assert len(client.referrers("team/app1", digests[1], mf.STATEMENT_ARTIFACT)) == 1
        assert f"not repaired: {registry.host}/team/app0@{digests[0]}: " in again.stderr, again.stderr
        assert "not a referrers index" in again.stderr and "1 image(s) could not be read or repaired" in again.stderr
    finally:
        registry.stop()
