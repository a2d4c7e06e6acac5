"""Reindex workers: each plans queued jobs and claims one chunk at a time under a lease and processes it;
idle workers end cancelled jobs nobody works on any more, and wait for a NOTIFY (a new job) or the poll
interval (a lease that expired on a dead replica)."""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg
import structlog

from service.jobs.errors import TRANSIENT_ERRORS, describe
from service.jobs.lease import while_leased
from service.jobs.planning import plan_next_job
from service.jobs.reindex_batch import BatchOutcome
from service.jobs.reindex_step import ChunkCancelled, JobEnded, LeaseLost, run_chunk
from service.jobs.repository import (
    HAND_BACK_CHUNK,
    JOBS_CHANNEL,
    RELEASE_CHUNK,
    ClaimedChunk,
    claim_chunk,
    end_abandoned_cancels,
    end_cancelled,
    fail_job,
    finish_chunk,
)
from service.jobs.start import covers
from service.jobs.sweep import Sweeper
from service.metrics import Metrics
from service.search.catalog import Catalogs
from service.store.notifications import CONNECTION_ERRORS, Wakeups, listening, reraise_if_cancelling
from service.store.search_parameters import refresh_catalog

log = structlog.get_logger(__name__)
T = TypeVar("T")


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
        # Unique to this instance: two apps in one process (or two hosts of one name) must not share leases.
        self._name = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        self._sweep = Sweeper(catalogs)

    async def run(self) -> None:
        """Run the workers until cancelled."""
        async with listening(self._pool, JOBS_CHANNEL, self._settings.poll_seconds) as wakeups:
            async with asyncio.TaskGroup() as workers:
                for number in range(self._settings.count):
                    workers.create_task(self._work(f"{self._name}-{number}", wakeups))

    async def _work(self, owner: str, wakeups: Wakeups) -> None:
        while True:
            seen = wakeups.count  # before looking, so a NOTIFY during the look is not lost
            chunk = await self._next_chunk(owner)
            if chunk is None:
                await wakeups.wait(seen, self._settings.poll_seconds)
                continue
            with structlog.contextvars.bound_contextvars(job_id=str(chunk.job_id), chunk=chunk.seq):
                await self._process(chunk, owner)

    async def _next_chunk(self, owner: str) -> ClaimedChunk | None:
        """Plan a queued job if there is one, and claim a chunk; when there is none, end the cancelled jobs
        whose workers died before they saw the cancel."""
        try:
            await plan_next_job(self._pool, self._catalogs, covers)
            async with self._pool.acquire() as conn:
                chunk = await claim_chunk(conn, owner, self._settings.lease_seconds)
                if chunk is None:
                    for job_id in await end_abandoned_cancels(conn):
                        log.info("job_ended", job_id=str(job_id), state="cancelled", detail="its workers had stopped")
                return chunk
        except CONNECTION_ERRORS as error:  # the next poll tries again
            reraise_if_cancelling(error)
            log.warning("claim_failed", owner=owner, error=describe(error))
            return None

    async def _process(self, chunk: ClaimedChunk, owner: str) -> None:
        if chunk.attempts > self._settings.max_attempts:
            await self._fail(chunk, f"its workers stopped {chunk.attempts - 1} times without finishing it "
                                    "(killed, or their lease expired)")
            return
        log.info("chunk_started", res_type=chunk.res_type, attempt=chunk.attempts, checkpoint=chunk.checkpoint)
        try:
            if chunk.catalog_generation > self._catalogs.current.generation:
                # This replica has not followed the change the job was started for yet (a missed NOTIFY).
                await refresh_catalog(self._pool, self._catalogs)
            async with self._pool.acquire() as read_conn, self._pool.acquire() as write_conn:
                lease = self._settings.lease_seconds
                await while_leased(self._pool, chunk, owner, lease, run_chunk(
                    read_conn, write_conn, chunk, self._catalogs, owner, lease, self._count_batch))
                ended = await shielded(finish_chunk(write_conn, chunk, owner, covers, self._sweep))
            log.info("chunk_finished", res_type=chunk.res_type)
            if ended:
                log.info("job_ended", state=ended)
        except asyncio.CancelledError:
            await shielded(self._release(chunk, owner, HAND_BACK_CHUNK))  # shutting down: others resume it now
            raise
        except Exception as error:
            current = asyncio.current_task()
            if current is not None and current.cancelling():  # an error the cancellation caused
                await shielded(self._release(chunk, owner, HAND_BACK_CHUNK))
                raise asyncio.CancelledError from error
            try:
                await self._stopped(chunk, owner, error)
            except CONNECTION_ERRORS as failure:  # the lease expires, and another worker ends what this one could not
                reraise_if_cancelling(failure)
                log.warning("chunk_stop_failed", error=describe(failure))

    async def _stopped(self, chunk: ClaimedChunk, owner: str, error: Exception) -> None:
        """The chunk stopped before its end: end the job, hand the chunk back for a retry, or leave it."""
        if isinstance(error, ChunkCancelled):
            await shielded(self._end_cancelled(chunk, owner))
            log.info("chunk_cancelled")
        elif isinstance(error, JobEnded | LeaseLost):
            log.warning("chunk_abandoned", detail=str(error))
        elif isinstance(error, TRANSIENT_ERRORS):
            log.warning("chunk_interrupted", error=describe(error), attempt=chunk.attempts)
            await self._retry(chunk, owner, error)
        elif isinstance(error, asyncpg.PostgresError):  # permanent: retrying cannot help
            await self._fail(chunk, describe(error))
        else:  # a bug must not stop this replica's workers: retried, then the job fails
            log.exception("chunk_crashed", attempt=chunk.attempts)
            await self._retry(chunk, owner, error)

    async def _retry(self, chunk: ClaimedChunk, owner: str, error: Exception) -> None:
        """Hand the chunk back, to be retried from its checkpoint by any worker; the last attempt fails the job."""
        if chunk.attempts >= self._settings.max_attempts:
            await self._fail(chunk, f"failed {chunk.attempts} times, last with {describe(error)}")
        else:
            await self._release(chunk, owner)

    def _count_batch(self, outcome: BatchOutcome, seconds: float) -> None:
        if self._metrics is not None:
            resources = self._metrics.reindex_resources
            resources.labels("changed").inc(outcome.changed)
            resources.labels("unchanged").inc(outcome.unchanged)
            resources.labels("failed").inc(len(outcome.failures))
            self._metrics.reindex_batch_seconds.observe(seconds)

    async def _release(self, chunk: ClaimedChunk, owner: str, statement: str = RELEASE_CHUNK) -> None:
        try:
            async with self._pool.acquire() as conn:
                await conn.execute(statement, chunk.job_id, chunk.seq, owner)
        except CONNECTION_ERRORS as exc:  # the lease expires instead, and the chunk is claimed again then
            log.warning("chunk_release_failed", error=type(exc).__name__)

    async def _end_cancelled(self, chunk: ClaimedChunk, owner: str) -> None:
        async with self._pool.acquire() as conn:
            await end_cancelled(conn, chunk.job_id, chunk.seq, owner)

    async def _fail(self, chunk: ClaimedChunk, error: str) -> None:
        """Fail the job at once; the status names the chunk and the cause."""
        message = f"chunk {chunk.seq} ({chunk.res_type}): {error}"
        log.error("job_failed", error=message)
        await shielded(self._write_failed(chunk, message))

    async def _write_failed(self, chunk: ClaimedChunk, message: str) -> None:
        async with self._pool.acquire() as conn:
            await fail_job(conn, chunk.job_id, message)


async def shielded(write: Coroutine[Any, Any, T]) -> T:
    """Run a final state write to its end even when the task awaiting it is cancelled meanwhile (the
    cancellation is raised once the write is over): a job must not stay running for want of one statement."""
    task = asyncio.ensure_future(write)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait([task])
        if not task.cancelled() and (error := task.exception()) is not None:
            log.warning("final_write_failed", error=describe(error))
        raise
