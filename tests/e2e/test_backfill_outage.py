"""backfill with the service state on PostgreSQL, the database restarting mid-run (every connection cut
and new ones refused for a few seconds): it waits for the database, as the workers do, and finishes
with every image recorded once."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest

from scitt_oci.oci import manifest as mf
from scitt_oci.oci.client import RegistryClient, RegistrySettings
from tests.registryproc import RegistryProcess, oci_layout, skopeo_push
from tests.stallproxy import stall_proxy
from tests.unit.log.test_postgres_store import DSN, dropped

IMAGES = 6


# Bytes the run has carried to PostgreSQL when the database goes away: its ~10 KB start is behind it, and
# the listing or the recording under way (the whole run carries about 60 KB without an outage).
@pytest.mark.parametrize("carried", [12_000, 30_000], ids=["listing", "recording"])
def test_backfill_waits_out_a_database_restart_and_records_every_image_once(tmp_path: Path, carried: int) -> None:
    registry = RegistryProcess(tmp_path / "registry").start()
    schema = "t_" + uuid.uuid4().hex[:12]
    port = int(psycopg.conninfo.conninfo_to_dict(DSN).get("port") or 5432)
    try:
        digests = [oci_layout(tmp_path / f"img{i}", f"outage{i}") for i in range(IMAGES)]
        for i in range(IMAGES):
            skopeo_push(tmp_path / f"img{i}", registry, f"team/app{i}")
        with dropped(schema), stall_proxy(port) as proxy:
            dsn = psycopg.conninfo.make_conninfo(DSN, host="127.0.0.1", port=str(proxy.port))
            config = tmp_path / "config.yaml"
            config.write_text(
                f"storage: {{backend: postgres, postgres_dsn: '{dsn}', postgres_schema: {schema}}}\n"
                # An event whose outcome could not be stored waits for its lease to run out: not 30 s here.
                "watch: {lease_seconds: 5}\n"
            )
            proxy.outage_after(carried, 3.0)
            done = subprocess.run(
                [sys.executable, "-m", "scitt_oci", "backfill", registry.host, "--config", str(config),
                 "--data-dir", str(tmp_path / "data"), "--registry-insecure"],
                capture_output=True, text=True, check=False, timeout=300,
            )  # fmt: skip
            assert proxy.outages == 1, f"the outage did not happen mid-run ({proxy.carried} bytes carried)"
            assert done.returncode == 0, done.stdout + done.stderr
            assert "waiting for it to come back" in done.stderr
            assert f"found {IMAGES} manifests not on record; queued {IMAGES}; recorded {IMAGES}" in done.stdout
        client = RegistryClient(RegistrySettings.for_url(registry.url))
        for i, digest in enumerate(digests):
            assert len(client.referrers(f"team/app{i}", digest, mf.STATEMENT_ARTIFACT)) == 1
    finally:
        registry.stop()
