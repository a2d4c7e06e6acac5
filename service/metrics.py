"""Prometheus metrics, one registry per app so several apps can live in one process (tests)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _PoolCollector(Collector):
    """Pool usage read at scrape time, so nothing has to keep a gauge up to date."""

    def __init__(self) -> None:
        self.read_pool: Callable[[], tuple[int, int, int]] | None = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        if self.read_pool is None:
            return
        size, idle, max_size = self.read_pool()
        for name, value, text in (
            ("fhir_db_pool_size", size, "Connections open in the pool"),
            ("fhir_db_pool_idle", idle, "Idle connections in the pool"),
            ("fhir_db_pool_max", max_size, "Maximum pool size"),
        ):
            yield GaugeMetricFamily(name, text, value=value)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "fhir_http_requests", "HTTP requests served", ["method", "route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "fhir_http_request_duration_seconds", "HTTP request latency", ["method", "route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=self.registry,
        )
        self._request_children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        self.pool = _PoolCollector()
        self.registry.register(self.pool)
        self.reindex_resources = Counter(
            "fhir_reindex_resources", "Resources processed by this replica's reindex workers", ["outcome"],
            registry=self.registry,
        )
        self.reindex_batch_seconds = Histogram(
            "fhir_reindex_batch_duration_seconds", "Time to extract and write one reindex batch",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5), registry=self.registry,
        )
        labels = ["job_id", "state"]
        self.job_processed = Gauge("fhir_reindex_job_processed", "Resources a live job has processed", labels,
                                   registry=self.registry)
        self.job_total = Gauge("fhir_reindex_job_total", "Resources a live job will visit (estimate)", labels,
                               registry=self.registry)
        self.job_rate = Gauge("fhir_reindex_job_rate", "Resources per second of a live job so far", labels,
                              registry=self.registry)

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count a served request and its latency. The labelled children are kept per label values: looking
        them up through `labels()` takes a lock and checks the labels on every request."""
        key = (method, route, status)
        children = self._request_children.get(key)
        if children is None:
            children = (self.requests.labels(method, route, str(status)), self.latency.labels(method, route))
            self._request_children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def set_jobs(self, jobs: list[tuple[str, str, int, int, float]]) -> None:
        """(job id, state, processed, total, rate) of the live jobs; ended jobs drop out."""
        for gauge in (self.job_processed, self.job_total, self.job_rate):
            gauge.clear()
        for job_id, state, processed, total, rate in jobs:
            self.job_processed.labels(job_id, state).set(processed)
            self.job_total.labels(job_id, state).set(total)
            self.job_rate.labels(job_id, state).set(rate)

    def render(self) -> bytes:
        return generate_latest(self.registry)
