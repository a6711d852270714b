"""Replicas benchmark: the watcher flat out with three `serve` replicas on one PostgreSQL database
(log and inbox) against one replica on the same database, webhooks sent round robin.

Run: .venv/bin/python bench/replicas.py [--images 300] [--pushers 16] [--closed-loop]
Flat out (as bench/watch.py's): the pushers push every image with no wait for its attachment, and the
figure is images / (time from the first push to the last image on record), read from the replicas'
shared `recorded` table (costing the registry no request); every attachment is then checked once.
`--closed-loop`: each pusher waits for its image's attachment before the next (pushers / latency).
Needs the local PostgreSQL (SCITT_OCI_TEST_PG_DSN, default host=127.0.0.1 user=postgres dbname=test);
each run uses a schema of its own, dropped afterwards. The floor printed beside the figures is the
push rate of the same registry with nothing watching it. On a machine with fewer cores than
replicas, three replicas share the same cores: the figure shows the overhead of sharing the inbox
and the log, not the gain of more machines.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import psycopg

from bench.watch import check_attached, push_image, registry_floor, wait_attached
from scitt_oci.cose import keys
from scitt_oci.oci.client import RegistryClient, RegistrySettings
from tests.registryproc import RegistryProcess
from tests.roundrobin import RoundRobin
from tests.serverproc import ServerProcess

DSN = os.environ.get("SCITT_OCI_TEST_PG_DSN", "host=127.0.0.1 user=postgres dbname=test")


def run(replicas: int, images: int, pushers: int, workers: int, closed_loop: bool = False) -> float:
    root = Path(tempfile.mkdtemp(prefix="bench-replicas-"))
    schema = "bench_" + uuid.uuid4().hex[:12]
    secret = "bench-secret-0123456789abcdef"
    (root / "secret").write_text(secret)
    for name in ("ts.pem", "issuer.pem"):
        (root / name).write_bytes(keys.generate(keys.algorithms.by_name("ES256")).private_pem())
        (root / name).chmod(0o600)
    env = {
        "SCITT_OCI_STORAGE__BACKEND": "postgres",
        "SCITT_OCI_STORAGE__POSTGRES_DSN": DSN,
        "SCITT_OCI_STORAGE__POSTGRES_SCHEMA": schema,
        "SCITT_OCI_TS_KEY": str(root / "ts.pem"),
        "SCITT_OCI_ISSUER_KEY": str(root / "issuer.pem"),
        "SCITT_OCI_IDENTITY": "https://ts.example",
        "SCITT_OCI_WATCH__WORKERS": str(workers),
    }
    servers = [ServerProcess(root / f"r{i}", env=env) for i in range(replicas)]
    balancer = RoundRobin([s.url for s in servers])
    registry = RegistryProcess(
        root / "registry", notify_url=f"{balancer.url}/webhooks/distribution", secret=secret
    ).start()
    try:
        for s in servers:
            s.args = ["--registry", registry.host, "--registry-insecure", "--webhook-secret-file", str(root / "secret")]
            s.start()
        client = RegistryClient(RegistrySettings.for_url(registry.url))

        def one(n: int) -> tuple[str, str]:
            repo = f"bench/app{n % 20}"
            digest = push_image(client, repo, n)
            if closed_loop:
                wait_attached(client, repo, digest, timeout=300, poll=0.05)
            return repo, digest

        started = time.monotonic()
        with ThreadPoolExecutor(pushers) as pool:
            pushed = list(pool.map(one, range(images)))
        if not closed_loop:
            _wait_recorded(schema, images, time.monotonic() + 300)
        rate = images / (time.monotonic() - started)
        check_attached(client, pushed)
        return rate
    finally:
        for s in servers:
            s.stop()
        registry.stop()
        balancer.close()
        with psycopg.connect(DSN, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def _wait_recorded(schema: str, images: int, deadline: float) -> None:
    """Until every image is on record with its referrer (polling the shared table, bounded by `deadline`)."""
    with psycopg.connect(DSN, autocommit=True) as conn:
        while True:
            row = conn.execute(
                f"SELECT COUNT(*) FROM {schema}.recorded WHERE kind = 'push' AND referrer IS NOT NULL"
            ).fetchone()
            done = int(row[0]) if row else 0
            if done >= images:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{done} of {images} images recorded in time")
            time.sleep(0.05)  # polling the replicas' progress, bounded by the deadline


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--pushers", type=int, default=16)
    parser.add_argument("--workers", type=int, default=8, help="watch.workers of each replica")
    parser.add_argument("--closed-loop", action="store_true", help="each pusher waits for its attachment")
    args = parser.parse_args()
    floor, _cpu = registry_floor(args.images, args.pushers)
    print(f"floor: {floor:,.1f} image pushes/s into docker-registry alone ({args.pushers} pushers, no watcher)")
    for replicas in (1, 3):
        rate = run(replicas, args.images, args.pushers, args.workers, args.closed_loop)
        mode = "closed loop" if args.closed_loop else "flat out"
        print(
            f"{replicas} replica(s) on PostgreSQL, {mode}: {args.images} images, {rate:,.1f} images/s recorded "
            f"and attached ({rate / floor:.0%} of the floor)"
        )


if __name__ == "__main__":
    main()
