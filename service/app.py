"""create_app(settings): middlewares, routes, and the resources the app owns, in cleanup_ctx order."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import suppress

from aiohttp import web

from service.db import open_service_database
from service.fhir.capability import StatementCache
from service.http.auth import authenticate, authentication_context
from service.http.keys import (
    CAPABILITY_STATEMENTS,
    CATALOG,
    JOB_POOL,
    LIFECYCLE,
    METRICS,
    POOL,
    PROBE_POOL,
    SETTINGS,
    STORE,
    Lifecycle,
)
from service.http.middlewares import add_common_headers, fhir_errors, fhir_negotiation, request_context
from service.http.routes import add_routes
from service.jobs.worker import ReindexWorkers, WorkerSettings
from service.metrics import Metrics
from service.pools import Pool
from service.search.catalog import Catalogs
from service.search.registry import Registry
from service.settings import Settings
from service.startup import SettingsError
from service.store.resources import ResourceStore
from service.store.search_parameters import follow_changes, refresh_catalog
from service.upkeep import keep_up


def create_app(settings: Settings) -> web.Application:
    if problems := settings.problems():  # e.g. an authentication set-up that cannot verify a single token
        raise SettingsError(problems)
    app = web.Application(
        # Authentication sits inside the error middleware (refusals become OperationOutcomes) and before
        # negotiation and body checks, so an unauthenticated client learns nothing about the API.
        middlewares=[request_context, fhir_errors, authenticate, fhir_negotiation],
        client_max_size=settings.max_body_bytes,
        handler_args={"max_field_size": settings.max_header_bytes, "max_line_size": settings.max_header_bytes},
    )
    app[SETTINGS] = settings
    app[METRICS] = Metrics()
    app[LIFECYCLE] = Lifecycle()
    app[CAPABILITY_STATEMENTS] = StatementCache()
    app.on_response_prepare.append(add_common_headers)
    app.cleanup_ctx.append(_database)
    app.cleanup_ctx.append(_search_parameters)
    app.cleanup_ctx.append(_reindex_workers)
    app.cleanup_ctx.append(_upkeep)
    app.cleanup_ctx.append(authentication_context)
    add_routes(app, settings.base_path)
    return app


def create_runner(app: web.Application, settings: Settings) -> web.AppRunner:
    """The runner `serve` listens with. A client that goes away cancels its request's handler (aiohttp
    leaves it running by default), and with it the handler's PostgreSQL statement."""
    return web.AppRunner(app, access_log=None, shutdown_timeout=settings.shutdown_timeout_seconds,
                         handler_cancellation=True)


async def _database(app: web.Application) -> AsyncIterator[None]:
    """The request, job and probe pools (embedded Postgres when no DATABASE_URL is set, migrations applied)."""
    async with open_service_database(app[SETTINGS]) as database:
        pool = app[POOL] = database.requests
        app[JOB_POOL] = database.jobs
        app[PROBE_POOL] = database.probes
        app[LIFECYCLE].schema_version = database.schema_version
        app[METRICS].pool.read_pool = lambda: (pool.get_size(), pool.get_idle_size(), pool.get_max_size())
        yield


async def _search_parameters(app: web.Application) -> AsyncIterator[None]:
    """The catalog of search parameters, the store that indexes with it, and the task that keeps it
    current when another replica changes a custom SearchParameter."""
    pool, settings = app[POOL], app[SETTINGS]
    assert isinstance(pool, Pool), "the requests' pool is the service's own (service/pools.py)"
    catalogs = app[CATALOG] = Catalogs(Registry.builtin(settings.local_bases))
    await refresh_catalog(pool, catalogs)
    app[STORE] = ResourceStore(pool, settings.lock_timeout_ms, catalogs)
    follower = asyncio.create_task(follow_changes(app[JOB_POOL], catalogs, settings.catalog_poll_seconds))
    yield
    await _stop(follower)


async def _reindex_workers(app: web.Application) -> AsyncIterator[None]:
    """This replica's share of the job engine: `FHIR_REINDEX_WORKERS` workers (none: an API-only node)."""
    settings = app[SETTINGS]
    if settings.reindex_workers == 0:
        yield
        return
    worker_settings = WorkerSettings(settings.reindex_workers, settings.reindex_lease_seconds,
                                     settings.reindex_poll_seconds)
    workers = asyncio.create_task(ReindexWorkers(app[JOB_POOL], app[CATALOG], worker_settings, app[METRICS]).run())
    yield
    await _stop(workers)


async def _upkeep(app: web.Application) -> AsyncIterator[None]:
    """Retention of ended jobs and compaction of the change log, on every replica (see service/upkeep.py)."""
    settings = app[SETTINGS]
    upkeep = asyncio.create_task(keep_up(app[JOB_POOL], settings.job_retention_days,
                                         settings.upkeep_interval_seconds))
    yield
    await _stop(upkeep)


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with suppress(asyncio.CancelledError):
        await task
