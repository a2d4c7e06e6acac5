"""A chunk's lease, renewed by a heartbeat for as long as its worker works on it, so a batch slower than
the lease (a large batchSize, ALL_VERSIONS, a wait for a row lock) does not hand the chunk to a second
worker. The heartbeat also stops the work early when the chunk was taken over, or its job ended or was
cancelled or paused, instead of waiting for the next checkpoint to find out."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import asyncpg
import structlog

from service.jobs.errors import describe
from service.jobs.reindex_step import JobEnded, LeaseLost, control_stop
from service.jobs.repository import ClaimedChunk
from service.store.notifications import CONNECTION_ERRORS, reraise_if_cancelling

log = structlog.get_logger(__name__)
T = TypeVar("T")
# A lease survives two missed heartbeats.
HEARTBEATS_PER_LEASE = 3
RENEW_LEASE = """
WITH renewed AS (
    UPDATE job_chunk SET lease_until = now() + make_interval(secs => $4)
    WHERE job_id = $1 AND seq = $2 AND owner = $3 AND state = 'running'
    RETURNING job_id
)
SELECT state, cancel_requested, paused_at IS NOT NULL AS paused, EXISTS (SELECT FROM renewed) AS renewed
FROM job WHERE id = $1"""


async def while_leased(pool: asyncpg.Pool, chunk: ClaimedChunk, owner: str, lease_seconds: float,
                       work: Coroutine[Any, Any, T]) -> T:
    """Run `work` with a heartbeat that renews the chunk's lease. When a renewal finds the chunk is no longer
    worth working on, the work is cancelled and this raises LeaseLost, JobEnded, ChunkCancelled or ChunkPaused."""
    working = asyncio.ensure_future(work)
    stopped: list[Exception] = []
    heartbeat = asyncio.create_task(_beat(pool, chunk, owner, lease_seconds, working, stopped))
    try:
        return await working
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if stopped and not (current is not None and current.cancelling()):
            raise stopped[0] from None
        raise
    finally:
        heartbeat.cancel()
        await asyncio.wait([heartbeat])


async def _beat(pool: asyncpg.Pool, chunk: ClaimedChunk, owner: str, lease_seconds: float,
                working: asyncio.Future[Any], stopped: list[Exception]) -> None:
    interval = lease_seconds / HEARTBEATS_PER_LEASE
    while True:
        await asyncio.sleep(interval)
        try:
            row = await pool.fetchrow(RENEW_LEASE, chunk.job_id, chunk.seq, owner, lease_seconds, timeout=interval)
        except CONNECTION_ERRORS as error:  # the next beat tries again; the lease has two more in it
            reraise_if_cancelling(error)
            log.warning("lease_renewal_failed", error=describe(error))
            continue
        if (reason := _stop_reason(row, chunk)) is not None:
            stopped.append(reason)
            working.cancel()
            return


def _stop_reason(row: asyncpg.Record | None, chunk: ClaimedChunk) -> Exception | None:
    if row is None or row["state"] != "in_progress":
        return JobEnded(f"job {chunk.job_id} ended while chunk {chunk.seq} ran")
    if not row["renewed"]:
        return LeaseLost(f"chunk {chunk.seq} of job {chunk.job_id} was taken over by another worker")
    return control_stop(row, chunk)
