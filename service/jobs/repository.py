"""Job and chunk SQL: creation, claiming under a lease, checkpoints, cancel, finalizing (planning: planning.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import asyncpg

from service.db import Connection
from service.jobs.report import ReindexCounts, ReindexFailure, TypeCounts, render_report
from service.jobs.status import EndState, JobState
from service.jobs.verify import verification_notes
from service.store.search_parameters import CHANNEL as SEARCH_PARAMETERS_CHANNEL

JOBS_CHANNEL = "jobs"
# Whether a job with these parameters indexed every stored resource of these base types.
Covers = Callable[[list[str], dict[str, Any]], bool]
# In a job's final transaction: (job parameters, changes about to be marked indexed) -> (those to mark, lines
# for the report); jobs/sweep.py.
Sweep = Callable[[Connection, dict[str, Any], list[asyncpg.Record]],
                 Awaitable[tuple[list[asyncpg.Record], list[str]]]]

INSERT_JOB = """
INSERT INTO job (id, kind, parameters, fingerprint, catalog_generation, full_coverage, created_by, created_by_type)
VALUES ($1, 'reindex', $2, $3, $4, $5, $6, $7)
ON CONFLICT (fingerprint) WHERE state IN ('queued', 'in_progress', 'finalizing') DO NOTHING
RETURNING id"""
SELECT_RUNNING_BY_FINGERPRINT = """
SELECT id FROM job WHERE fingerprint = $1 AND state IN ('queued', 'in_progress', 'finalizing')"""
NOTIFY_JOBS = "SELECT pg_notify($1, $2::text)"

# One statement: the oldest claimable chunk (pending, or running under an expired lease) of a live job.
CLAIM_CHUNK = """
WITH claimed AS (
    UPDATE job_chunk c SET state = 'running', owner = $1, lease_until = now() + make_interval(secs => $2),
                           attempts = c.attempts + 1
    WHERE (c.job_id, c.seq) = (
        SELECT k.job_id, k.seq FROM job_chunk k JOIN job j ON j.id = k.job_id
        WHERE j.state IN ('queued', 'in_progress') AND NOT j.cancel_requested
          AND (k.state = 'pending' OR (k.state = 'running' AND k.lease_until < now()))
        ORDER BY j.created_at, k.seq
        FOR UPDATE OF k SKIP LOCKED LIMIT 1)
    RETURNING c.job_id, c.seq, c.res_type, c.hi, c.checkpoint, c.attempts
)
SELECT claimed.*, j.parameters, j.catalog_generation FROM claimed JOIN job j ON j.id = claimed.job_id"""
START_JOB = """
UPDATE job SET state = 'in_progress', started_at = now() WHERE id = $1 AND state = 'queued'"""
# The batch's checkpoint: counters, failures (kept to 100), lease extended. It refuses (advances nothing)
# when the chunk is no longer ours, or when the job is no longer running: the key-share lock waits for a
# transaction that is ending the job (it locks the row FOR UPDATE) and then sees its outcome, so no batch
# commits after a job's report was summed. Returns whether the job runs, is cancelled, and was advanced.
CHECKPOINT_CHUNK = """
WITH live AS (
    SELECT state = 'in_progress' AS running, cancel_requested FROM job WHERE id = $1 FOR KEY SHARE
), advanced AS (
    UPDATE job_chunk SET checkpoint = $3, processed = processed + $4, changed = changed + $5,
                         unchanged = unchanged + $6, failed = failed + $7,
                         failures = CASE WHEN jsonb_array_length(failures) >= 100 THEN failures
                                         ELSE failures || $8::jsonb END,
                         -- from the clock, not now(): the batch's transaction may have begun long ago
                         lease_until = clock_timestamp() + make_interval(secs => $9)
    WHERE job_id = $1 AND seq = $2 AND owner = $10 AND state = 'running' AND (SELECT running FROM live)
    RETURNING job_id
)
SELECT running, cancel_requested, EXISTS (SELECT FROM advanced) AS advanced FROM live"""
FINISH_CHUNK = "UPDATE job_chunk SET state = 'done', lease_until = NULL WHERE job_id = $1 AND seq = $2 AND owner = $3"
RELEASE_CHUNK = """
UPDATE job_chunk SET state = 'pending', owner = NULL, lease_until = NULL
WHERE job_id = $1 AND seq = $2 AND owner = $3 AND state = 'running'"""
# A worker shutting down hands its chunk back: the claim it undoes does not count as an attempt.
HAND_BACK_CHUNK = """
UPDATE job_chunk SET state = 'pending', owner = NULL, lease_until = NULL, attempts = attempts - 1
WHERE job_id = $1 AND seq = $2 AND owner = $3 AND state = 'running'"""
# Only the transaction that finishes the last chunk moves the job on (the row lock serialises them).
LOCK_JOB = "SELECT state, cancel_requested FROM job WHERE id = $1 FOR UPDATE"
COUNT_OPEN_CHUNKS = "SELECT count(*) FROM job_chunk WHERE job_id = $1 AND state <> 'done'"
SUM_BY_TYPE = """
SELECT res_type, sum(processed) AS processed, sum(changed) AS changed, sum(unchanged) AS unchanged,
       sum(failed) AS failed
FROM job_chunk WHERE job_id = $1 GROUP BY res_type ORDER BY res_type"""
SELECT_FAILURES = """
SELECT f FROM job_chunk, jsonb_array_elements(failures) AS f WHERE job_id = $1 ORDER BY seq LIMIT 100"""
END_JOB = """
UPDATE job SET state = $2, ended_at = now(), report = $3, error = $4 WHERE id = $1 RETURNING started_at, ended_at"""
SELECT_JOB = "SELECT * FROM job WHERE id = $1"
SELECT_JOB_PROGRESS = """
SELECT j.state, j.total_estimate, j.error, j.report, coalesce(sum(c.processed), 0) AS processed,
       extract(epoch FROM now() - j.started_at) AS elapsed
FROM job j LEFT JOIN job_chunk c ON c.job_id = j.id WHERE j.id = $1 GROUP BY j.id"""
SET_REPORT = "UPDATE job SET report = $2 WHERE id = $1"
REQUEST_CANCEL = """
UPDATE job SET cancel_requested = true WHERE id = $1 AND state IN ('queued', 'in_progress', 'finalizing')
RETURNING state"""
# A cancelled job no live lease works on (its chunk holders died before they saw the cancel): any idle
# worker ends it. SKIP LOCKED: one worker does, the others move on.
SELECT_ABANDONED_CANCEL = """
SELECT j.id FROM job j
WHERE j.state IN ('queued', 'in_progress') AND j.cancel_requested
  AND NOT EXISTS (SELECT FROM job_chunk c WHERE c.job_id = j.id AND c.state = 'running' AND c.lease_until > now())
ORDER BY j.created_at LIMIT 1 FOR UPDATE OF j SKIP LOCKED"""
SELECT_RUNNING_CHUNKS = "SELECT count(*) FROM job_chunk WHERE job_id = $1 AND state = 'running' AND lease_until > now()"


@dataclass(frozen=True, slots=True)
class ClaimedChunk:
    job_id: UUID
    seq: int
    res_type: str
    hi: int
    checkpoint: int
    attempts: int
    parameters: dict[str, Any]
    catalog_generation: int


async def claim_chunk(conn: Connection, owner: str, lease_seconds: float) -> ClaimedChunk | None:
    async with conn.transaction():
        row = await conn.fetchrow(CLAIM_CHUNK, owner, lease_seconds)
        if row is None:
            return None
        await conn.execute(START_JOB, row["job_id"])
    return ClaimedChunk(row["job_id"], row["seq"], row["res_type"], row["hi"], row["checkpoint"], row["attempts"],
                        row["parameters"], row["catalog_generation"])


SELECT_PENDING_CHANGES = "SELECT generation, base FROM search_parameter_change WHERE NOT indexed AND generation <= $1"
MARK_CHANGES_INDEXED = "UPDATE search_parameter_change SET indexed = true WHERE generation = ANY($1::bigint[])"


async def job_totals(conn: Connection, job_id: UUID) -> tuple[ReindexCounts, list[ReindexFailure]]:
    """The job's counters per resource type, and its first 100 failures."""
    counts = ReindexCounts({
        row["res_type"]: TypeCounts(int(row["changed"]), int(row["unchanged"]), int(row["failed"]))
        for row in await conn.fetch(SUM_BY_TYPE, job_id)
    })
    failures = []
    for row in await conn.fetch(SELECT_FAILURES, job_id):
        resource_type, _, resource_id = row[0]["id"].partition("/")
        failures.append(ReindexFailure(resource_type, resource_id, row[0]["reason"]))
    return counts, failures


async def finish_chunk(conn: Connection, chunk: ClaimedChunk, owner: str,
                       covers: Covers, sweep: Sweep | None = None) -> EndState | None:
    """Mark the chunk done; the transaction that finishes a job's last chunk ends the job (after `sweep`, see
    jobs/sweep.py). Returns the job's final state when this call ended it."""
    async with conn.transaction():
        await conn.execute(FINISH_CHUNK, chunk.job_id, chunk.seq, owner)
        job = await _job_row(conn, LOCK_JOB, chunk.job_id)
        if job["state"] != "in_progress" or await conn.fetchval(COUNT_OPEN_CHUNKS, chunk.job_id):
            return None
        return await _end_job(conn, chunk.job_id, "cancelled" if job["cancel_requested"] else None, covers, sweep)


async def end_cancelled(conn: Connection, job_id: UUID, seq: int | None, owner: str | None) -> None:
    """Stop a cancelled job: release the caller's chunk (if any) and end the job as cancelled."""
    async with conn.transaction():
        if seq is not None:
            await conn.execute(RELEASE_CHUNK, job_id, seq, owner)
        job = await _job_row(conn, LOCK_JOB, job_id)
        if job["state"] in ("queued", "in_progress", "finalizing"):
            await _end_job(conn, job_id, "cancelled", lambda _bases, _parameters: False)


async def fail_job(conn: Connection, job_id: UUID, error: str) -> None:
    async with conn.transaction():
        job = await _job_row(conn, LOCK_JOB, job_id)
        if job["state"] in ("queued", "in_progress", "finalizing"):
            await conn.execute(END_JOB, job_id, "failed", None, error)


async def _job_row(conn: Connection, query: str, job_id: UUID, *args: object) -> asyncpg.Record:
    """The row a statement on one job returns: there is one, as only long-ended jobs are deleted."""
    row = await conn.fetchrow(query, job_id, *args)
    if row is None:
        raise LookupError(f"job {job_id} does not exist")
    return row


async def _end_job(conn: Connection, job_id: UUID, forced_state: EndState | None,
                   covers: Covers, sweep: Sweep | None = None) -> EndState:
    await conn.execute("UPDATE job SET state = 'finalizing' WHERE id = $1", job_id)
    job = await _job_row(conn, SELECT_JOB, job_id)
    counts, failures = await job_totals(conn, job_id)
    state: EndState = forced_state or ("failed" if counts.failed else "completed")
    notes: list[str] = []
    if state == "completed" and job["full_coverage"]:
        notes += await _mark_indexed(conn, job["catalog_generation"], job["parameters"], covers, sweep)
    if job["parameters"].get("verify"):
        notes += await verification_notes(conn, job_id)
    error = f"{counts.failed} resources could not be reindexed" if state == "failed" else None
    times = await _job_row(conn, END_JOB, job_id, state, None, error)
    started = times["started_at"] or times["ended_at"]
    report = render_report(counts, started, times["ended_at"] - started, failures, notes)
    await conn.execute(SET_REPORT, job_id, report)
    return state


async def _mark_indexed(conn: Connection, generation: int, parameters: dict[str, Any],
                        covers: Covers, sweep: Sweep | None) -> list[str]:
    """Custom parameter changes whose base types this job covered are indexed now, but for those `sweep`
    keeps pending; replicas are told. Returns the sweep's lines for the report."""
    covered = [row for row in await conn.fetch(SELECT_PENDING_CHANGES, generation)
               if covers(list(row["base"]), parameters)]
    notes: list[str] = []
    if covered and sweep is not None:
        covered, notes = await sweep(conn, parameters, covered)
    done = [row["generation"] for row in covered]
    if done:
        await conn.execute(MARK_CHANGES_INDEXED, done)
        await conn.execute(NOTIFY_JOBS, SEARCH_PARAMETERS_CHANNEL, str(max(done)))
    return notes


async def request_cancel(conn: Connection, job_id: UUID) -> JobState | None:
    """Flag the job cancelled; a job no worker holds ends at once. Returns the state it was in (None: ended)."""
    async with conn.transaction():
        state: JobState | None = await conn.fetchval(REQUEST_CANCEL, job_id)
        if state is not None and not await conn.fetchval(SELECT_RUNNING_CHUNKS, job_id):
            await end_cancelled(conn, job_id, None, None)
        await conn.execute(NOTIFY_JOBS, JOBS_CHANNEL, str(job_id))
    return state


async def end_abandoned_cancels(conn: Connection) -> list[UUID]:
    """End every cancelled job that no live lease works on; returns their ids."""
    ended: list[UUID] = []
    while True:
        async with conn.transaction():
            job_id: UUID | None = await conn.fetchval(SELECT_ABANDONED_CANCEL)
            if job_id is None:
                return ended
            await end_cancelled(conn, job_id, None, None)
        ended.append(job_id)


async def end_empty_job(conn: Connection, job_id: UUID, covers: Covers) -> EndState:
    """A job with no chunk (no resources of its types) completes at once."""
    await conn.execute(START_JOB, job_id)
    return await _end_job(conn, job_id, None, covers)


@dataclass(frozen=True, slots=True)
class JobProgress:
    state: JobState
    processed: int
    total: int
    elapsed_seconds: float | None
    error: str | None
    report: str | None


async def job_progress(conn: Connection | asyncpg.Pool, job_id: UUID) -> JobProgress | None:
    row = await conn.fetchrow(SELECT_JOB_PROGRESS, job_id)
    if row is None:
        return None
    elapsed = None if row["elapsed"] is None else float(row["elapsed"])
    return JobProgress(row["state"], int(row["processed"]), int(row["total_estimate"]), elapsed, row["error"],
                       row["report"])


SELECT_LIVE_JOBS = """
SELECT j.id::text AS id, j.state, j.total_estimate, coalesce(sum(c.processed), 0) AS processed,
       extract(epoch FROM now() - j.started_at) AS elapsed
FROM job j LEFT JOIN job_chunk c ON c.job_id = j.id
WHERE j.state IN ('queued', 'in_progress', 'finalizing') GROUP BY j.id"""


async def live_jobs(pool: asyncpg.Pool) -> list[tuple[str, str, int, int, float]]:
    """(id, state, processed, total, rate) of every job not yet ended, for /metrics."""
    jobs = []
    for row in await pool.fetch(SELECT_LIVE_JOBS):
        elapsed = float(row["elapsed"] or 0)
        rate = int(row["processed"]) / elapsed if elapsed else 0.0
        jobs.append((row["id"], row["state"], int(row["processed"]), int(row["total_estimate"]), rate))
    return jobs
