"""Reindex workers: each claims one chunk at a time under a lease and processes it; idle workers wait
for a NOTIFY (a new job) or the poll interval (a lease that expired on a dead replica)."""

from __future__ import annotations

import asyncio
import os
import socket
from contextlib import suppress
from dataclasses import dataclass

import asyncpg
import structlog

from service.jobs.reindex_batch import BatchOutcome
from service.jobs.reindex_step import ChunkCancelled, LeaseLost, run_chunk
from service.jobs.repository import (
    JOBS_CHANNEL,
    RELEASE_CHUNK,
    ClaimedChunk,
    claim_chunk,
    end_cancelled,
    fail_job,
    finish_chunk,
)
from service.jobs.start import covers
from service.jobs.sweep import Sweeper
from service.metrics import Metrics
from service.search.catalog import Catalogs
from service.store.notifications import CONNECTION_ERRORS, listening, reraise_if_cancelling
from service.store.search_parameters import refresh_catalog

log = structlog.get_logger(__name__)
# Worth retrying: another transaction won, or the connection went away.
TRANSIENT_ERRORS = (asyncpg.SerializationError, asyncpg.DeadlockDetectedError, *CONNECTION_ERRORS)


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    count: int
    lease_seconds: float = 60.0
    poll_seconds: float = 5.0
    max_attempts: int = 5


class ReindexWorkers:
    def __init__(self, pool: asyncpg.Pool, catalogs: Catalogs, settings: WorkerSettings,
                 metrics: Metrics | None = None) -> None:
        self._pool = pool
        self._catalogs = catalogs
        self._settings = settings
        self._metrics = metrics
        self._name = f"{socket.gethostname()}-{os.getpid()}"
        self._sweep = Sweeper(catalogs)

    async def run(self) -> None:
        """Run the workers until cancelled."""
        async with listening(self._pool, JOBS_CHANNEL, self._settings.poll_seconds) as wakeup:
            async with asyncio.TaskGroup() as workers:
                for number in range(self._settings.count):
                    workers.create_task(self._work(f"{self._name}-{number}", wakeup))

    async def _work(self, owner: str, wakeup: asyncio.Event) -> None:
        while True:
            try:
                async with self._pool.acquire() as conn:
                    chunk = await claim_chunk(conn, owner, self._settings.lease_seconds)
            except TRANSIENT_ERRORS as exc:
                reraise_if_cancelling(exc)
                log.warning("claim_failed", owner=owner, error=type(exc).__name__)
                chunk = None
            if chunk is None:
                wakeup.clear()
                with suppress(TimeoutError):
                    async with asyncio.timeout(self._settings.poll_seconds):
                        await wakeup.wait()
                continue
            with structlog.contextvars.bound_contextvars(job_id=str(chunk.job_id), chunk=chunk.seq):
                await self._process(chunk, owner)

    async def _process(self, chunk: ClaimedChunk, owner: str) -> None:
        if chunk.attempts > self._settings.max_attempts:
            await self._give_up(chunk, f"chunk {chunk.seq} ({chunk.res_type}) failed {chunk.attempts - 1} times")
            return
        log.info("chunk_started", res_type=chunk.res_type, attempt=chunk.attempts, checkpoint=chunk.checkpoint)
        try:
            if chunk.catalog_generation > self._catalogs.current.generation:
                # This replica has not followed the change the job was started for yet (a missed NOTIFY).
                await refresh_catalog(self._pool, self._catalogs)
            async with self._pool.acquire() as read_conn, self._pool.acquire() as write_conn:
                await run_chunk(read_conn, write_conn, chunk, self._catalogs, owner, self._settings.lease_seconds,
                                self._count_batch)
                ended = await finish_chunk(write_conn, chunk, owner, covers, self._sweep)
            log.info("chunk_finished", res_type=chunk.res_type)
            if ended:
                log.info("job_ended", state=ended)
        except ChunkCancelled:
            async with self._pool.acquire() as conn:
                await end_cancelled(conn, chunk.job_id, chunk.seq, owner)
            log.info("chunk_cancelled")
        except LeaseLost as exc:
            log.warning("chunk_lease_lost", detail=str(exc))
        except TRANSIENT_ERRORS as exc:
            reraise_if_cancelling(exc)
            log.warning("chunk_interrupted", error=type(exc).__name__, detail=str(exc), attempt=chunk.attempts)
            await self._release(chunk, owner)  # retried from its checkpoint, by any worker
        except asyncio.CancelledError:
            await asyncio.shield(self._release(chunk, owner))  # shutting down: another worker resumes it now
            raise
        except Exception:  # a bug must not stop this replica's workers: retried, then the job fails
            log.exception("chunk_crashed", attempt=chunk.attempts)
            await self._release(chunk, owner)

    def _count_batch(self, outcome: BatchOutcome, seconds: float) -> None:
        if self._metrics is not None:
            resources = self._metrics.reindex_resources
            resources.labels("changed").inc(outcome.changed)
            resources.labels("unchanged").inc(outcome.unchanged)
            resources.labels("failed").inc(len(outcome.failures))
            self._metrics.reindex_batch_seconds.observe(seconds)

    async def _release(self, chunk: ClaimedChunk, owner: str) -> None:
        try:
            async with self._pool.acquire() as conn:
                await conn.execute(RELEASE_CHUNK, chunk.job_id, chunk.seq, owner)
        except CONNECTION_ERRORS as exc:  # the lease expires instead, and the chunk is claimed again then
            log.warning("chunk_release_failed", error=type(exc).__name__)

    async def _give_up(self, chunk: ClaimedChunk, error: str) -> None:
        log.error("job_failed", error=error)
        async with self._pool.acquire() as conn:
            await fail_job(conn, chunk.job_id, error)

