"""Upkeep that keeps the database bounded, run by every replica: ended jobs past `FHIR_JOB_RETENTION_DAYS`
are deleted, and the SearchParameter change log is compacted. Both are safe when replicas run them at once.
Each round also starts the reindex an upgrade of the extractor needs (jobs/upgrade.py)."""

from __future__ import annotations

import asyncio

import asyncpg
import structlog

from service.jobs.retention import delete_expired_jobs
from service.jobs.upgrade import reindex_older_extractions
from service.store.change_log import compact_change_log
from service.store.notifications import CONNECTION_ERRORS, reraise_if_cancelling

log = structlog.get_logger(__name__)


async def upkeep_once(pool: asyncpg.Pool, retention_days: int) -> tuple[int, int]:
    """One round: (jobs deleted, change log rows compacted)."""
    async with pool.acquire() as conn:
        jobs = await delete_expired_jobs(conn, retention_days)
        changes = await compact_change_log(conn)
    if jobs or changes:
        log.info("upkeep_done", jobs_deleted=jobs, change_log_rows_deleted=changes)
    return jobs, changes


async def keep_up(pool: asyncpg.Pool, retention_days: int, interval_seconds: float) -> None:
    """A round at start, then every `interval_seconds`, until cancelled; a failed round waits for the next."""
    while True:
        try:
            await upkeep_once(pool, retention_days)
            await reindex_older_extractions(pool)
        except CONNECTION_ERRORS as exc:
            reraise_if_cancelling(exc)
            log.warning("upkeep_failed", error=type(exc).__name__, detail=str(exc))
        await asyncio.sleep(interval_seconds)
