"""Kubernetes probes and Prometheus metrics, outside the FHIR base path and without a token."""

from __future__ import annotations

import asyncio

import orjson
import structlog
from aiohttp import web

from service.db import schema_version
from service.http.keys import LIFECYCLE, METRICS, PROBE_POOL, Lifecycle
from service.jobs.repository import live_jobs
from service.metrics import CONTENT_TYPE
from service.store.notifications import CONNECTION_ERRORS

log = structlog.get_logger(__name__)
_READY_TIMEOUT_SECONDS = 2.0


def _status(http_status: int, **body: object) -> web.Response:
    return web.Response(status=http_status, body=orjson.dumps(body), content_type="application/json")


async def livez(request: web.Request) -> web.Response:
    """Alive: the loop answers. No database call, so a database outage does not restart pods."""
    return _status(200, status="alive")


async def readyz(request: web.Request) -> web.Response:
    lifecycle = request.app[LIFECYCLE]
    if lifecycle.draining:
        return _status(503, status="draining")
    try:
        async with asyncio.timeout(_READY_TIMEOUT_SECONDS):
            version = await schema_version(request.app[PROBE_POOL])
    except (*CONNECTION_ERRORS, TimeoutError) as exc:
        log.warning("readiness_database_unavailable", error=type(exc).__name__)
        return _status(503, status="database unavailable")
    if version < lifecycle.schema_version:
        return _status(503, status="migrations pending", schema_version=version)
    if version > lifecycle.schema_version and not lifecycle.been_ready:
        return _schema_newer_than_code(lifecycle, version)
    lifecycle.been_ready = True
    return _status(200, status="ready", schema_version=version)


def _schema_newer_than_code(lifecycle: Lifecycle, version: int) -> web.Response:
    """Not ready: this replica has not served yet, and a newer release has migrated the schema (a rollback).

    A replica that was already serving when an upgrade migrated under it stays ready: migrations are
    expand-first, so it keeps working, and taking every old replica out at once would leave the first new
    one alone with the traffic.
    """
    detail = (f"the database schema is at version {version}, newer than this release's {lifecycle.schema_version}: "
              "a newer release migrated it (see 'Upgrade and roll back' in the README)")
    if not lifecycle.newer_schema_logged:
        lifecycle.newer_schema_logged = True
        log.warning("schema_newer_than_code", schema_version=version, code_schema_version=lifecycle.schema_version,
                    detail=detail)
    return _status(503, status="schema newer than code", schema_version=version,
                   code_schema_version=lifecycle.schema_version, detail=detail)


async def metrics(request: web.Request) -> web.Response:
    registry = request.app[METRICS]
    try:
        async with asyncio.timeout(_READY_TIMEOUT_SECONDS):
            registry.set_jobs(await live_jobs(request.app[PROBE_POOL]))
    except (*CONNECTION_ERRORS, TimeoutError) as exc:
        # The process metrics still matter when the database does not answer.
        log.warning("metrics_jobs_unavailable", error=type(exc).__name__)
    return web.Response(body=registry.render(), headers={"Content-Type": CONTENT_TYPE})
