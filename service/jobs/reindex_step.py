"""One chunk of a reindex job: stream its rows with a server-side cursor in a short read-only
transaction, and commit each batch (jobs/reindex_batch.py) in its own short transaction on a second
connection, together with the chunk's checkpoint."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import structlog

from service.db import Connection
from service.jobs.filters import chunk_read
from service.jobs.isolation import write_isolating
from service.jobs.reindex_batch import BatchOutcome, PreparedBatch
from service.jobs.repository import CHECKPOINT_CHUNK, ClaimedChunk
from service.jobs.start import ReindexPlan
from service.jobs.stored_rows import prepare_compared
from service.jobs.verify import record_differences
from service.search.catalog import Catalogs
from service.search.sql import CHUNK_SELECT, Statement

log = structlog.get_logger(__name__)

READ_CHUNK = f"""
{CHUNK_SELECT}
WHERE r.res_type = $1 AND r.res_id > $2 AND r.res_id <= $3 AND NOT r.deleted ORDER BY r.res_id"""
# A batch's write transaction: what it did, whether the job was cancelled, its seconds.
Writing = asyncio.Task[tuple[BatchOutcome, bool, float]]


class ChunkCancelled(Exception):
    """The job was cancelled: the chunk stops after the batch that saw it (that batch is kept)."""


class LeaseLost(Exception):
    """Another worker took the chunk over (our lease expired): stop without writing."""


class JobEnded(Exception):
    """The job ended (cancelled, or failed on another chunk) while this chunk ran: stop without writing, so
    its report counts every batch that was written."""


async def run_chunk(read_conn: Connection, write_conn: Connection, chunk: ClaimedChunk,
                    catalogs: Catalogs, owner: str, lease_seconds: float,
                    on_batch: Callable[[BatchOutcome, float], None] = lambda _outcome, _seconds: None) -> None:
    """Process the chunk from its checkpoint to its end, telling `on_batch` what each committed batch did
    and how long it took; raises ChunkCancelled when the job is cancelled.

    Batches are pipelined: while Postgres writes one batch, the next one is read and extracted, so the
    database's work and ours overlap. Batches still commit one at a time and in order."""
    plan = ReindexPlan.from_parameters(chunk.parameters)
    writing: Writing | None = None
    try:
        async with read_conn.transaction(isolation="repeatable_read", readonly=True):
            statement = _chunk_read(chunk, catalogs)
            cursor = await read_conn.cursor(statement.text, *statement.params)
            while rows := await cursor.fetch(plan.batch_size):
                batch = await prepare_compared(read_conn, chunk.res_type, rows, catalogs.current, plan)
                if writing is not None:
                    await _committed(writing, chunk, on_batch)
                writing = asyncio.create_task(_commit(write_conn, chunk, batch, plan, owner, lease_seconds))
        if writing is not None:
            await _committed(writing, chunk, on_batch)
    except BaseException as ending:
        if writing is not None:
            await _settle(writing, ending)
        raise


async def _commit(conn: Connection, chunk: ClaimedChunk, batch: PreparedBatch, plan: ReindexPlan,
                  owner: str, lease_seconds: float) -> tuple[BatchOutcome, bool, float]:
    """Write the batch and advance the checkpoint in one transaction (a crash loses at most this batch);
    returns what it did, whether the job was cancelled, and the batch's seconds from extraction to commit."""
    async with conn.transaction():
        outcome = await write_isolating(conn, chunk.res_type, batch, plan)
        await record_differences(conn, chunk.job_id, chunk.res_type, batch.differences)
        checkpoint = await conn.fetchrow(
            CHECKPOINT_CHUNK, chunk.job_id, chunk.seq, outcome.last_res_id, outcome.processed, outcome.changed,
            outcome.unchanged, len(outcome.failures), outcome.failures, lease_seconds, owner)
        # Raising rolls the batch back.
        if checkpoint is None or not checkpoint["running"]:
            raise JobEnded(f"job {chunk.job_id} ended while chunk {chunk.seq} ran")
        if not checkpoint["advanced"]:
            raise LeaseLost(f"chunk {chunk.seq} of job {chunk.job_id} was taken over by another worker")
        cancelled: bool = checkpoint["cancel_requested"]
    return outcome, cancelled, time.perf_counter() - batch.started


async def _committed(writing: Writing, chunk: ClaimedChunk,
                     on_batch: Callable[[BatchOutcome, float], None]) -> None:
    outcome, cancelled, seconds = await writing
    on_batch(outcome, seconds)
    if cancelled:
        raise ChunkCancelled(f"job {chunk.job_id} was cancelled")


async def _settle(writing: Writing, ending: BaseException) -> None:
    """The chunk ends with `ending`: stop the pipelined write if it still runs (its transaction rolls back
    and the chunk resumes from the last checkpoint), and log a failure of its own that would be lost."""
    if not writing.done():
        writing.cancel()
    await asyncio.wait([writing])  # never raises the task's error; a cancellation of ours still propagates
    if not writing.cancelled() and (error := writing.exception()) not in (None, ending):
        log.warning("batch_write_failed", error=type(error).__name__, detail=str(error))


def _chunk_read(chunk: ClaimedChunk, catalogs: Catalogs) -> Statement:
    """The statement and arguments that stream the chunk's resources from its checkpoint."""
    queries = chunk.parameters.get("filters", {}).get(chunk.res_type)
    if not queries:
        return Statement(READ_CHUNK, (chunk.res_type, chunk.checkpoint, chunk.hi))
    return chunk_read(catalogs.registry, chunk.parameters["base"], chunk.res_type, queries, chunk.checkpoint, chunk.hi)
