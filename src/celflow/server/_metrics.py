"""``/metrics`` in the Prometheus text format (prometheus-client), one registry per app."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .._sink import Sink

__all__ = ["Metrics"]

_BATCH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_QUERY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)


class _ManagerCollector(Collector):
    """Reads the sink's counters at scrape time (nothing to keep in sync; no database query)."""

    def __init__(self) -> None:
        self.sink: Sink | None = None

    def collect(self) -> Iterator[Metric]:
        if self.sink is None:
            return
        stats = self.sink.stats()
        counters = {
            "stored": ("Events committed to the database by this run", stats.total_stored),
            "duplicates": ("Events ignored as duplicates by this run", stats.duplicates),
            "dropped": ("Events dropped by the overflow policy", stats.dropped),
            "lost": ("Events accepted but never written (a batch that failed for good)", stats.lost),
            "batch_errors": ("Failed batch writes (retried)", stats.errors),
        }
        for name, (text, value) in counters.items():
            yield CounterMetricFamily(
                f"celflow_events_{name}" if name != "batch_errors" else f"celflow_{name}", text, value
            )
        yield GaugeMetricFamily("celflow_queue_size", "Events waiting for the writer", stats.queue_size)
        yield GaugeMetricFamily("celflow_queue_capacity", "The queue's limit (max_queue_size)", stats.max_queue_size)
        yield GaugeMetricFamily("celflow_writer_healthy", "1 if the last batch write succeeded", int(stats.healthy))
        db = stats.database
        yield GaugeMetricFamily("celflow_database_events", "Events in the database", db.total_events)
        size = db.database_size_mb * 1024 * 1024  # the file and its WAL already
        yield GaugeMetricFamily("celflow_database_size_bytes", "Database and WAL file size", size)


class Metrics:
    """The metrics of one app: request-side ones kept here, the manager's read at scrape time."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.received = Counter(
            "celflow_http_events_received", "Valid events received over HTTP", registry=self.registry
        )
        self.batch_seconds = Histogram(
            "celflow_batch_seconds", "Time to commit one batch", buckets=_BATCH_BUCKETS, registry=self.registry
        )
        self.query_seconds = Histogram(
            "celflow_query_seconds",
            "Time to answer a read, by endpoint",
            ["endpoint"],
            buckets=_QUERY_BUCKETS,
            registry=self.registry,
        )
        self._collector = _ManagerCollector()
        self.registry.register(self._collector)

    def observe_batch(self, seconds: float, inserted: int) -> None:
        """A writer batch observer (runs on the writer thread; prometheus-client is thread-safe)."""
        self.batch_seconds.observe(seconds)

    def render(self, sink: Sink) -> tuple[bytes, str]:
        """The exposition text and its content type."""
        self._collector.sink = sink
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
