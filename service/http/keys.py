"""Typed application and request keys shared by the handlers."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone

import asyncpg
from aiohttp import web

from service.fhir.capability import StatementCache
from service.http.tokens import Principal, TokenVerifier
from service.metrics import Metrics
from service.pools import Pool
from service.search.catalog import Catalogs
from service.settings import Settings
from service.store.resources import ResourceStore


@dataclass
class Lifecycle:
    """What readiness reports: set by start-up, shutdown and the readiness probe itself."""

    # The newest migration this code ships.
    schema_version: int = 0
    draining: bool = False
    # Readiness has answered 200 once: a schema that grows after that does not take this replica out.
    been_ready: bool = False
    newer_schema_logged: bool = False
    started: datetime = field(default_factory=lambda: datetime.now(timezone.utc))


SETTINGS = web.AppKey("settings", Settings)
POOL = web.AppKey("pool", Pool)  # requests'
JOB_POOL = web.AppKey("job_pool", asyncpg.Pool)  # the job engine's: workers, listeners, upkeep
# Readiness and metrics only: one connection that requests never take.
PROBE_POOL = web.AppKey("probe_pool", asyncpg.Pool)
STORE = web.AppKey("store", ResourceStore)
METRICS = web.AppKey("metrics", Metrics)
LIFECYCLE = web.AppKey("lifecycle", Lifecycle)
CATALOG = web.AppKey("catalog", Catalogs)
CAPABILITY_STATEMENTS = web.AppKey("capability_statements", StatementCache)
TOKEN_VERIFIER = web.AppKey("token_verifier", TokenVerifier)

# Per-request values set by the middlewares.
RESPONSE_TYPE = web.RequestKey("response_type", str)
REQUEST_ID = web.RequestKey("request_id", str)
# The authenticated caller; absent on open paths (probes, metrics, metadata) and on 401 refusals.
PRINCIPAL = web.RequestKey("principal", Principal)
