"""create_app(settings): middlewares, routes, and the resources the app owns, in cleanup_ctx order."""

from __future__ import annotations

from collections.abc import AsyncIterator

import structlog
from aiohttp import web

from service.db import EmbeddedPostgres, create_pool, load_migrations, migrate
from service.http.auth import authenticate, authentication_context
from service.http.keys import LIFECYCLE, METRICS, POOL, SETTINGS, STORE, Lifecycle
from service.http.middlewares import add_common_headers, fhir_errors, fhir_negotiation, request_context
from service.http.routes import add_routes
from service.metrics import Metrics
from service.settings import Settings
from service.store.resources import ResourceStore

log = structlog.get_logger(__name__)


def create_app(settings: Settings) -> web.Application:
    settings.check_auth()  # refuse to start with an authentication set-up that cannot verify a token
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
    app.on_response_prepare.append(add_common_headers)
    app.cleanup_ctx.append(_database)
    app.cleanup_ctx.append(authentication_context)
    add_routes(app, settings.base_path)
    return app


async def _database(app: web.Application) -> AsyncIterator[None]:
    """Embedded Postgres when no DATABASE_URL is set, the pool, and the migrations."""
    settings = app[SETTINGS]
    embedded = EmbeddedPostgres(settings.data_dir) if settings.embedded else None
    dsn = await embedded.start() if embedded else settings.database_url
    assert dsn is not None
    try:
        pool = await create_pool(dsn, settings)
        try:
            migrations = load_migrations()
            async with pool.acquire() as conn:
                await migrate(conn, migrations)
            app[LIFECYCLE].schema_version = migrations[-1].version
            app[POOL] = pool
            app[STORE] = ResourceStore(pool, settings.lock_timeout_ms)
            app[METRICS].pool.read_pool = lambda: (pool.get_size(), pool.get_idle_size(), pool.get_max_size())
            yield
        finally:
            await pool.close()
    finally:
        if embedded:
            await embedded.stop()
