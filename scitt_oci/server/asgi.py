"""The ASGI entry point for `scitt-oci serve --workers N`: each worker process builds its own runtime
from the configuration the parent resolved, and runs its own sequencer. SQLite's write lock
serialises their batches; every batch re-reads the tree size, so they interleave safely.
"""

from __future__ import annotations

import json
import os

from starlette.applications import Starlette

from scitt_oci.config import Config
from scitt_oci.server import runtime
from scitt_oci.server.listeners import GuardedHttpToolsProtocol

# Deliberately not SCITT_OCI_*: those are configuration keys.
WORKER_CONFIG_ENV = "SCITTOCI_WORKER_CONFIG"


def worker_config(config: Config) -> str:
    """The configuration for worker processes, secrets included: `model_dump_json` writes SecretStr
    values as `**********`, which left the workers with no PostgreSQL DSN. It travels in the workers'
    environment only (readable by the same user, like the data directory); it is never logged."""
    doc = config.model_dump(mode="json")
    if config.storage.postgres_dsn is not None:
        doc["storage"]["postgres_dsn"] = config.storage.postgres_dsn.get_secret_value()
    return json.dumps(doc)


def create() -> Starlette:
    config = Config.model_validate_json(os.environ[WORKER_CONFIG_ENV])
    GuardedHttpToolsProtocol.configure(config.http.header_timeout_seconds, config.http.body_timeout_seconds)
    return runtime.build(config, run_sequencer=True).app
