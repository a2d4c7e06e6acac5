"""Prometheus metrics, one registry per app so several apps can live in one process (tests)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
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
        self.pool = _PoolCollector()
        self.registry.register(self.pool)

    def render(self) -> bytes:
        return generate_latest(self.registry)
