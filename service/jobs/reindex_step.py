"""One chunk of a reindex job: stream its rows with a server-side cursor in short read-only transactions,
and commit each batch (jobs/reindex_batch.py) in its own short transaction on a second connection, together
with the chunk's checkpoint. A throttled job's batches wait for their share of its rate (jobs/throttle.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from functools import partial

import asyncpg
import structlog

from service.db import Connection
from service.jobs.filters import chunk_read
from service.jobs.isolation import write_isolating
from service.jobs.reindex_batch import BatchOutcome, PreparedBatch
from service.jobs.repository import CHECKPOINT_CHUNK, ClaimedChunk
from service.jobs.start import ReindexPlan
from service.jobs.stored_rows import prepare_compared
from service.jobs.throttle import pace
from service.jobs.verify import record_differences
from service.search.catalog import Catalogs
from service.search.sql import CHUNK_SELECT, Statement

log = structlog.get_logger(__name__)

READ_CHUNK = f"""
{CHUNK_SELECT}
WHERE r.res_type = $1 AND r.res_id > $2 AND r.res_id <= $3 AND NOT r.deleted ORDER BY r.res_id"""
# An open read transaction holds back VACUUM: a chunk that takes longer than this (a throttled job, slow
# batches) reads on in a new transaction from where it got to.
SNAPSHOT_SECONDS = 10.0
# The read transaction's statements each touch one batch. Parallel workers cost more to start and to gather from
# than they save, on the cores the job's own process needs: the stored rows' digests of a batch
# (store/stored_digests.py) took 17 ms with two, 11 ms without.
SERIAL_READS = "SET LOCAL max_parallel_workers_per_gather = 0"
# A batch's write transaction: what it did, the job's row as its checkpoint saw it, its seconds.
Writing = asyncio.Task[tuple[BatchOutcome, asyncpg.Record, float]]


class ChunkCancelled(Exception):
    """The job was cancelled: the chunk stops after the batch that saw it (that batch is kept)."""


class ChunkPaused(Exception):
    """The job was paused: the chunk is handed back after the batch that saw it (that batch is kept), and
    resumed from its checkpoint once the job is resumed."""


class LeaseLost(Exception):
    """Another worker took the chunk over (our lease expired): stop without writing."""


class JobEnded(Exception):
    """The job ended (cancelled, or failed on another chunk) while this chunk ran: stop without writing, so
    its report counts every batch that was written."""


async def run_chunk(read_conn: Connection, write_conn: Connection, chunk: ClaimedChunk,
                    catalogs: Catalogs, owner: str, lease_seconds: float,
                    on_batch: Callable[[BatchOutcome, float], None] = lambda _outcome, _seconds: None) -> None:
    """Process the chunk from its checkpoint to its end, telling `on_batch` what each committed batch did
    and how long it took; raises ChunkCancelled or ChunkPaused when the job is cancelled or paused.

    Batches are pipelined: while Postgres writes one batch, the next one is read and extracted, so the
    database's work and ours overlap. Batches still commit one at a time and in order."""
    plan = ReindexPlan.from_parameters(chunk.parameters)
    rate = chunk.throttle_rate
    writing: Writing | None = None
    position: int | None = chunk.checkpoint  # where the next read transaction starts; None: at the end
    try:
        while position is not None:
            async with read_conn.transaction(isolation="repeatable_read", readonly=True):
                await read_conn.execute(SERIAL_READS)
                statement = _chunk_read(chunk, catalogs, position)
                cursor = await read_conn.cursor(statement.text, *statement.params)
                position, renew_at = None, time.monotonic() + SNAPSHOT_SECONDS
                while rows := await cursor.fetch(plan.batch_size):
                    batch = await prepare_compared(read_conn, chunk.res_type, rows, catalogs.current, plan)
                    if writing is not None:
                        rate = await _committed(writing, chunk, on_batch)
                    # The write connection is idle until this batch's write starts: it takes the tokens.
                    rate = await pace(write_conn, chunk.job_id, rate, len(rows), partial(live_job, chunk=chunk))
                    writing = asyncio.create_task(_commit(write_conn, chunk, batch, plan, owner, lease_seconds))
                    if time.monotonic() > renew_at:
                        position = rows[-1]["res_id"]
                        break
        if writing is not None:
            await _committed(writing, chunk, on_batch)
    except BaseException as ending:
        if writing is not None:
            await _settle(writing, ending)
        raise


async def _commit(conn: Connection, chunk: ClaimedChunk, batch: PreparedBatch, plan: ReindexPlan,
                  owner: str, lease_seconds: float) -> tuple[BatchOutcome, asyncpg.Record, float]:
    """Write the batch and advance the checkpoint in one transaction (a crash loses at most this batch);
    returns what it did, the job's row as the checkpoint saw it, and the batch's seconds from extraction to
    commit."""
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
    return outcome, checkpoint, time.perf_counter() - batch.started


async def _committed(writing: Writing, chunk: ClaimedChunk,
                     on_batch: Callable[[BatchOutcome, float], None]) -> int | None:
    """Wait for the batch's commit; returns the job's throttle rate, or raises when the job was cancelled
    or paused (the batch is kept)."""
    outcome, job, seconds = await writing
    on_batch(outcome, seconds)
    rate: int | None = live_job(job, chunk)["throttle_rate"]
    return rate


def live_job(job: asyncpg.Record | None, chunk: ClaimedChunk) -> asyncpg.Record:
    """The job's row, read by a worker on the chunk; raises when it says the worker must stop."""
    if job is None or not job["running"]:
        raise JobEnded(f"job {chunk.job_id} ended while chunk {chunk.seq} ran")
    if stop := control_stop(job, chunk):
        raise stop
    return job


def control_stop(job: asyncpg.Record, chunk: ClaimedChunk) -> Exception | None:
    """What an operator's cancel or pause of the job (as its row says) asks of the worker on the chunk."""
    if job["cancel_requested"]:
        return ChunkCancelled(f"job {chunk.job_id} was cancelled")
    if job["paused"]:
        return ChunkPaused(f"job {chunk.job_id} was paused")
    return None


async def _settle(writing: Writing, ending: BaseException) -> None:
    """The chunk ends with `ending`: stop the pipelined write if it still runs (its transaction rolls back
    and the chunk resumes from the last checkpoint), and log a failure of its own that would be lost."""
    if not writing.done():
        writing.cancel()
    await asyncio.wait([writing])  # never raises the task's error; a cancellation of ours still propagates
    if not writing.cancelled() and (error := writing.exception()) not in (None, ending):
        log.warning("batch_write_failed", error=type(error).__name__, detail=str(error))


def _chunk_read(chunk: ClaimedChunk, catalogs: Catalogs, after: int) -> Statement:
    """The statement and arguments that stream the chunk's resources after res_id `after`."""
    queries = chunk.parameters.get("filters", {}).get(chunk.res_type)
    if not queries:
        return Statement(READ_CHUNK, (chunk.res_type, after, chunk.hi))
    return chunk_read(catalogs.registry, chunk.parameters["base"], chunk.res_type, queries, after, chunk.hi)
