"""Three `scitt-oci serve` replicas watching one docker-registry on one PostgreSQL database (log and
inbox), the registry's webhooks sent to them round robin (as a Service would), one replica SIGKILLed
mid-run: every image ends with exactly one push statement attached and one log entry, every event is
done once (none lost, none dead), and the log audits consistent across the kill."""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import requests
from click.testing import CliRunner

from scitt_oci.cli import main
from scitt_oci.cose import algorithms, keys
from scitt_oci.oci import manifest as mf
from scitt_oci.oci.client import RegistryClient, RegistrySettings
from scitt_oci.scitt import profile, statement, transparent
from scitt_oci.verify.trust import load_policy
from scitt_oci.verify.verifier import verify_transparent_statement
from tests.registryproc import RegistryProcess, oci_layout, skopeo_push
from tests.roundrobin import RoundRobin
from tests.serverproc import ServerProcess
from tests.unit.log.test_postgres_store import DSN

SECRET = "replica-webhook-secret-0123456789"
IMAGES = 15
ROUNDS = 3


@pytest.fixture
def schema() -> Iterator[str]:
    name = "t_" + uuid.uuid4().hex[:12]
    yield name
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


def _events(schema: str) -> dict[str, int]:
    with psycopg.connect(DSN, autocommit=True) as conn:
        rows = conn.execute(f"SELECT state, COUNT(*) FROM {schema}.events GROUP BY state").fetchall()
    return {state: int(n) for state, n in rows}


def _leased_by(schema: str, pid: int) -> list[int]:
    """Events pending under a live lease of the `serve` process `pid`."""
    with psycopg.connect(DSN, autocommit=True) as conn:
        rows = conn.execute(
            f"SELECT id FROM {schema}.events WHERE state = 'pending' AND lease_owner LIKE %s AND lease_until > %s",
            (f"%/{pid}/%", time.time()),
        ).fetchall()
    return [int(r[0]) for r in rows]


def _logged(url: str) -> bool:
    """The log behind `url` has a signed tree head (an empty one answers 404)."""
    return requests.get(url + "/checkpoint", timeout=10).status_code == 200


def _audit(url: str, state: Path) -> None:
    result = CliRunner().invoke(main, ["log", "audit", "--ts", url, "--state", str(state)])
    assert result.exit_code == 0, result.output


def test_three_replicas_one_killed_every_image_recorded_once(tmp_path: Path, schema: str) -> None:
    issuer = keys.generate(algorithms.by_name("ES256"))
    ts_key = keys.generate(algorithms.by_name("ES256"))
    for name, key in (("ts.pem", ts_key), ("issuer.pem", issuer)):
        (tmp_path / name).write_bytes(key.private_pem())
        (tmp_path / name).chmod(0o600)
    (tmp_path / "secret").write_text(SECRET)
    env = {
        "SCITT_OCI_STORAGE__BACKEND": "postgres",
        "SCITT_OCI_STORAGE__POSTGRES_DSN": DSN,
        "SCITT_OCI_STORAGE__POSTGRES_SCHEMA": schema,
        "SCITT_OCI_TS_KEY": str(tmp_path / "ts.pem"),
        "SCITT_OCI_ISSUER_KEY": str(tmp_path / "issuer.pem"),
        "SCITT_OCI_IDENTITY": "https://ts.example",
        "SCITT_OCI_WATCH__LEASE_SECONDS": "3",  # a dead replica's events are taken up after 3 s
        "SCITT_OCI_WATCH__WORKERS": "4",
    }
    # Replica 1, the one to be killed, runs more workers so that it holds more of the leases.
    replicas = [
        ServerProcess(tmp_path / f"r{i}", env={**env, "SCITT_OCI_WATCH__WORKERS": "8"} if i == 1 else env)
        for i in range(3)
    ]
    balancer = RoundRobin([r.url for r in replicas])
    registry = RegistryProcess(tmp_path / "registry", notify_url=f"{balancer.url}/webhooks/distribution", secret=SECRET)
    registry.start()
    try:
        for r in replicas:
            r.args = [
                "--registry",
                registry.host,
                "--registry-insecure",
                "--webhook-secret-file",
                str(tmp_path / "secret"),
            ]
            r.start()
        client = RegistryClient(RegistrySettings.for_url(registry.url))
        digests: dict[str, str] = {}
        pushed: list[str] = []

        def push_round(n: int) -> None:
            for i in range(IMAGES):
                repo, layout = f"replicas/app{n}-{i}", tmp_path / f"img{n}-{i}"
                digests[repo] = oci_layout(layout, f"replica image {n}-{i}")
                skopeo_push(layout, registry, repo)
                pushed.append(repo)

        # Kill replica 1 while it holds a lease on an event: when a look finds one, freeze it, look again
        # and kill it if it still does (frozen, it cannot finish the event between the look and the
        # kill); else let it run on. Looking does not slow the replica down.
        # Leases are short: a round of pushes in which no look found one is followed by another
        # (at most ROUNDS), so that the kill happens under a lease however fast the machine is.
        victim = replicas[1]
        assert victim.proc is not None
        held: list[int] = []
        for n in range(ROUNDS):
            pusher = threading.Thread(target=push_round, args=(n,))
            pusher.start()
            deadline = time.monotonic() + 60
            # Look while images are pushed and while their events are still pending (under load,
            # processing runs on well after the last push).
            while not held and time.monotonic() < deadline and (pusher.is_alive() or _events(schema).get("pending", 0)):
                if not _leased_by(schema, victim.proc.pid):
                    continue  # look again (each look is a database round trip)
                os.kill(victim.proc.pid, signal.SIGSTOP)
                held = _leased_by(schema, victim.proc.pid)  # frozen: still held, or finished just before
                # The audit across the kill needs a tree head before it: a lease taken before the first batch
                # was logged is let go, and the look goes on.
                if held and not _logged(replicas[0].url):
                    held = []
                if held:
                    _audit(replicas[0].url, tmp_path / "audit.json")
                    victim.kill()
                else:
                    os.kill(victim.proc.pid, signal.SIGCONT)
            pusher.join(120)
            if held:
                break
            # The registry notifies three times per image (the image, our referrer, our index), so with
            # three replicas a strict rotation can hand replica 1 only the news of our own writes, which it
            # skips at once: shift the rotation by one before the next round.
            next(balancer.turn)
        assert len(pushed) == IMAGES * (n + 1)
        assert held, f"replica 1 never held a lease in {ROUNDS} rounds of pushes"
        assert balancer.sent[replicas[2].url] > 0

        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # polling the asynchronous outcome, bounded by the deadline
            counts = _events(schema)
            attached = [len(client.referrers(repo, d, mf.STATEMENT_ARTIFACT)) for repo, d in digests.items()]
            if set(counts) == {"done"} and all(attached):
                break
            time.sleep(0.2)
        assert set(counts) == {"done"}, (counts, replicas[0].output()[-3000:])
        # The events the dead replica held were taken up by the others and completed.
        with psycopg.connect(DSN, autocommit=True) as conn:
            states = conn.execute(
                f"SELECT state, lease_owner FROM {schema}.events WHERE id = ANY(%s)", (held,)
            ).fetchall()
        assert states == [("done", None)] * len(held)

        policy_file = tmp_path / "policy.yaml"
        (tmp_path / "ts.cbor").write_bytes(requests.get(replicas[0].url + "/.well-known/scitt-keys", timeout=5).content)
        (tmp_path / "issuer.pub").write_bytes(issuer.public_pem())
        policy_file.write_text(
            "transparency_services: [{name: local, keys: [{path: ts.cbor}]}]\n"
            "issuers: [{name: operator, keys: [{path: issuer.pub}]}]\n"
        )
        policy = load_policy(policy_file)
        for repo, digest in digests.items():
            found = client.referrers(repo, digest, mf.STATEMENT_ARTIFACT)
            assert len(found) == 1, (repo, found)  # exactly one push statement attached
            fetched = client.manifest(repo, found[0].digest)
            assert fetched is not None
            blob = client.blob(repo, mf.parse(fetched[0], fetched[1]).layers[0].digest)
            assert blob is not None
            result = verify_transparent_statement(blob, policy, digest=digest)
            assert result.valid, result.to_json()
            assert profile.read_event(transparent.parse(blob).statement).kind.value == "push"

        # One log entry per image, whichever replica registered it; nothing else in the log.
        with psycopg.connect(DSN, autocommit=True) as conn:
            entries = [bytes(e) for (e,) in conn.execute(f"SELECT entry FROM {schema}.entries ORDER BY idx")]
        subjects = sorted(str(profile.read_event(statement.parse(e)).subject.digest) for e in entries)
        assert subjects == sorted(digests.values())
        # The log only grew across the kill, as seen through each surviving replica.
        _audit(replicas[0].url, tmp_path / "audit.json")
        _audit(replicas[2].url, tmp_path / "audit2.json")
    finally:
        for r in replicas:
            r.stop()
        registry.stop()
        balancer.close()
