"""The service's Prometheus metrics (one registry per app)."""

from __future__ import annotations

import collections
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from sona_jax.serve.fusion import KIND_NAMES

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
ENGINE_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.5)
FRESHNESS = {  # gauges set from `service.answers.freshness.freshness` on every scrape
    "model_version": "served model version",
    "model_age_seconds": "seconds since the served model version was trained",
    "events_since_model": "events stored since the served model was trained",
    "items_since_model": "servable items added since the served model was trained",
    "items_waiting": "catalogue changes stored but waiting for the next capacity's programs",
    "item_capacity": "rows of the served item arrays",
    "compiled_programs": "compiled programs held by live program sets (every served shape)",
    "program_sets": "program sets alive: one per served shape (the next capacity's included)",
    "last_rebuild_seconds": "duration of the last rebuild",
    "last_rebuild_succeeded": "1 when the last rebuild succeeded, 0 when it failed",
    "last_rebuild_finished": "when the last rebuild finished (seconds since the epoch)",
    "tables_refreshed": "when popularity tables last took in events (seconds since the epoch)",
}


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "sona_requests", "HTTP requests", ["endpoint", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "sona_request_seconds",
            "HTTP latency",
            ["endpoint"],
            registry=self.registry,
            buckets=LATENCY_BUCKETS,
        )
        self.batch = Histogram(
            "sona_batch_size",
            "requests per engine call",
            ["batcher"],
            registry=self.registry,
            buckets=BATCH_BUCKETS,
        )
        self.batch_seconds = Histogram(
            "sona_batch_seconds",
            "engine call time per batch (the batch function alone)",
            ["batcher"],
            registry=self.registry,
            buckets=ENGINE_BUCKETS,
        )
        self.events = Counter("sona_events_stored", "viewing events stored", registry=self.registry)
        self.overloaded = Counter(
            "sona_overloaded", "requests refused with 503", registry=self.registry
        )
        # Per-kind counts of listed items: a plain list the request path adds to (a Prometheus
        # label lookup per request cost several percent of a core at saturation), read out at
        # each scrape by `_ListedItems`.
        self.listed = [0] * len(KIND_NAMES)
        self.registry.register(_ListedItems(self.listed))
        # Lists served per content id by this process (the console's item page; per-item
        # labels would swamp the Prometheus scrape, so it is not exported there).
        self.item_listed: collections.Counter[str] = collections.Counter()
        self.candidate_counts: Callable[[], tuple[int, int, int]] = lambda: (0, 0, 0)
        self.registry.register(_Candidates(lambda: self.candidate_counts()))
        self.freshness = {
            name: Gauge(f"sona_{name}", text, registry=self.registry)
            for name, text in FRESHNESS.items()
        }

    def observe_batch(self, batcher: str, size: int, seconds: float) -> None:
        self.batch.labels(batcher).observe(size)
        self.batch_seconds.labels(batcher).observe(seconds)

    def observe_request(self, endpoint: str, status: int, seconds: float | None) -> None:
        self.requests.labels(endpoint, str(status)).inc()
        if seconds is not None:
            self.latency.labels(endpoint).observe(seconds)

    def count(self, endpoint: str, status: int) -> float:
        """How many requests to ``endpoint`` were answered with ``status``."""
        return self.requests.labels(endpoint, str(status))._value.get()


class _ListedItems:
    """``sona_recommended_items_total{kind}``: items in computed recommendation lists by
    ``recommendation_type`` (the new-content share is read from these)."""

    def __init__(self, counts: list[int]):
        self.counts = counts

    def collect(self):
        family = CounterMetricFamily(
            "sona_recommended_items",
            "items in computed recommendation lists, by recommendation_type",
            labels=["kind"],
        )
        for kind, count in zip(KIND_NAMES, self.counts, strict=True):
            family.add_metric([kind], count)
        yield family


class _Candidates:
    """``sona_candidates_total{result}`` (requests that found their viewer's retrieved
    candidates kept, or retrieved them) and ``sona_candidates_kept`` (viewers kept), read from
    the candidate cache at each scrape."""

    def __init__(self, counts: Callable[[], tuple[int, int, int]]):
        self.counts = counts

    def collect(self):
        hits, misses, kept = self.counts()
        family = CounterMetricFamily(
            "sona_candidates",
            "recommendation and score requests by whether their viewer's candidates were kept",
            labels=["result"],
        )
        family.add_metric(["kept"], hits)
        family.add_metric(["retrieved"], misses)
        yield family
        yield GaugeMetricFamily("sona_candidates_kept", "viewers whose candidates are kept", kept)
