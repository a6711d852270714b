"""The service's Prometheus metrics, and their exposition under `serve --workers N`."""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from scitt_oci.log.store import BatchResult


def exposition(registry: CollectorRegistry) -> CollectorRegistry:
    """With `--workers N` every worker writes its values to PROMETHEUS_MULTIPROC_DIR; a scrape then
    reports the sum over all workers, whichever answers."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return registry
    from prometheus_client import multiprocess

    combined = CollectorRegistry()
    multiprocess.MultiProcessCollector(combined)  # type: ignore[no-untyped-call]
    return combined


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.registrations = Counter(
            "scitt_registrations", "Registration requests by outcome", ["outcome"], registry=self.registry
        )
        self.latency = Histogram(
            "scitt_registration_seconds",
            "Time from request to answer for POST /entries",
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.batch_size = Histogram(
            "scitt_batch_entries",
            "Entries integrated per signed tree head",
            registry=self.registry,
            buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000),
        )
        self.commit_seconds = Histogram(
            "scitt_batch_commit_seconds",
            "Time to store and sign one batch",
            registry=self.registry,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1),
        )
        # multiprocess_mode: how `--workers N` combines the workers' values (ignored with one process)
        self.tree_size = Gauge("scitt_tree_size", "Entries in the log", registry=self.registry, multiprocess_mode="max")
        self.waiting = Gauge(
            "scitt_registrations_waiting",
            "Registrations not yet integrated",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.inbox = Gauge(
            "scitt_watch_events",
            "Registry events in the inbox by state (dead = dead-lettered)",
            ["state"],
            registry=self.registry,
            multiprocess_mode="max",
        )

    def observe_batch(self, result: BatchResult, seconds: float) -> None:
        self.commit_seconds.observe(seconds)
        if result.head is not None:
            self.batch_size.observe(len(result.integrated))
            self.tree_size.set(result.head.tree_size)
