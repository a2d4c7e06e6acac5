"""Planning a queued job, in a worker (`POST $reindex` only records the job, in constant time): each type's
res_ids are cut into chunks by a keyset walk, and the resources the job will visit are counted (live
ones, matching its `url` filters), in one transaction that ends with the job's estimate and a NOTIFY.

A planner holds a transaction-scoped advisory lock on the job, so two workers never plan the same job,
and a planner that dies leaves nothing behind: its transaction rolls back and another worker plans the
job again. A cancel meanwhile is not held up (the job's row is locked only by the last statement)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import asyncpg
import structlog

from service.db import Connection
from service.jobs.errors import TRANSIENT_ERRORS, describe
from service.jobs.filters import count_read
from service.jobs.repository import JOBS_CHANNEL, NOTIFY_JOBS, Covers, end_empty_job, fail_job
from service.search.catalog import Catalog, Catalogs
from service.store.search_parameters import refresh_catalog

log = structlog.get_logger(__name__)
DEFAULT_CHUNK_SIZE = 5000
MAX_RES_ID = 2**63 - 1
# Planners of different replicas, keyed (this class, the job id's hash) in the two-int advisory key space.
PLANNING_LOCK_CLASS = 0x7265_696E  # "rein"

# Queued jobs without chunks are not planned yet; a paused one waits until it is resumed.
SELECT_UNPLANNED = """
SELECT j.id FROM job j
WHERE j.state = 'queued' AND NOT j.cancel_requested AND j.paused_at IS NULL
  AND NOT EXISTS (SELECT FROM job_chunk c WHERE c.job_id = j.id)
ORDER BY j.created_at LIMIT 10"""
LOCK_FOR_PLANNING = "SELECT pg_try_advisory_xact_lock($1, hashtext($2::text))"
# Checked again under the lock: another planner may have committed in between.
SELECT_IF_UNPLANNED = """
SELECT j.id, j.parameters, j.catalog_generation FROM job j
WHERE j.id = $1 AND j.state = 'queued' AND NOT EXISTS (SELECT FROM job_chunk c WHERE c.job_id = j.id)"""
# The types that have resources, by a loose index scan over (res_type, res_id).
SELECT_RESOURCE_TYPES = """
WITH RECURSIVE types (res_type) AS (
    (SELECT res_type FROM resource ORDER BY res_type LIMIT 1)
    UNION ALL
    SELECT (SELECT r.res_type FROM resource r WHERE r.res_type > t.res_type ORDER BY r.res_type LIMIT 1)
    FROM types t WHERE t.res_type IS NOT NULL
)
SELECT res_type FROM types WHERE res_type IS NOT NULL"""
# The res_id that closes a chunk of $3 resources after $2: a bounded index walk from a keyset position.
SELECT_CHUNK_END = """
SELECT res_id FROM resource WHERE res_type = $1 AND res_id > $2 ORDER BY res_id OFFSET $3 - 1 LIMIT 1"""
SELECT_LAST_RES_ID = "SELECT max(res_id) FROM resource WHERE res_type = $1 AND res_id > $2"
INSERT_CHUNKS = """
INSERT INTO job_chunk (job_id, seq, res_type, lo, hi, checkpoint)
SELECT $1, seq, res_type, lo, hi, lo FROM unnest($2::integer[], $3::text[], $4::bigint[], $5::bigint[])
    AS c (seq, res_type, lo, hi)"""
COUNT_LIVE = "SELECT count(*) FROM resource WHERE res_type = ANY($1::text[]) AND NOT deleted"
# Unless the job ended meanwhile (a cancel): then the whole plan rolls back.
SET_ESTIMATE = "UPDATE job SET total_estimate = $2 WHERE id = $1 AND state = 'queued' RETURNING id"


async def plan_next_job(pool: asyncpg.Pool, catalogs: Catalogs, covers: Covers) -> UUID | None:
    """Plan the oldest queued job no other worker is planning; returns its id (None: nothing to plan).
    A job whose plan fails for a reason other than a transient one fails, with the cause."""
    async with pool.acquire() as conn:
        job: asyncpg.Record | None = None
        transaction = conn.transaction()
        await transaction.start()
        try:
            job = await _lock_unplanned(conn)
            planned = job is not None and await _plan(pool, conn, job, catalogs, covers)
        except TRANSIENT_ERRORS:
            await transaction.rollback()
            raise
        except Exception as error:
            await transaction.rollback()
            if job is None:
                raise
            await fail_job(conn, job["id"], f"planning failed: {describe(error)}")
            return None
        if not planned:
            await transaction.rollback()
            return None
        await transaction.commit()
    return job["id"] if job is not None else None


async def _lock_unplanned(conn: Connection) -> asyncpg.Record | None:
    for candidate in await conn.fetch(SELECT_UNPLANNED):
        if await conn.fetchval(LOCK_FOR_PLANNING, PLANNING_LOCK_CLASS, str(candidate["id"])):
            job = await conn.fetchrow(SELECT_IF_UNPLANNED, candidate["id"])
            if job is not None:
                return job
    return None


async def _plan(pool: asyncpg.Pool, conn: Connection, job: asyncpg.Record, catalogs: Catalogs,
                covers: Covers) -> bool:
    """Chunks, estimate and NOTIFY in the caller's transaction; False when the job ended meanwhile."""
    job_id, parameters = job["id"], job["parameters"]
    types = list(parameters["types"]) or [row["res_type"] for row in await conn.fetch(SELECT_RESOURCE_TYPES)]
    if not await plan_chunks(conn, job_id, types, parameters.get("chunkSize", DEFAULT_CHUNK_SIZE)):
        await end_empty_job(conn, job_id, covers)  # every resource of its types was deleted since the POST
        return True
    if job["catalog_generation"] > catalogs.current.generation:
        await refresh_catalog(pool, catalogs)  # its url filters may name a parameter this replica lacks yet
    estimate = await _estimate(conn, types, parameters, catalogs.current)
    if await conn.fetchval(SET_ESTIMATE, job_id, estimate) is None:
        return False
    await conn.execute(NOTIFY_JOBS, JOBS_CHANNEL, str(job_id))
    log.info("job_planned", job_id=str(job_id), types=types, resources=estimate)
    return True


async def plan_chunks(conn: Connection, job_id: UUID, res_types: list[str], chunk_size: int) -> int:
    """Split each type's res_ids into chunks of `chunk_size` by a keyset walk; returns how many."""
    seqs: list[int] = []
    types: list[str] = []
    lows: list[int] = []
    highs: list[int] = []
    for res_type in res_types:
        low = 0
        while True:
            high: int | None = await conn.fetchval(SELECT_CHUNK_END, res_type, low, chunk_size)
            if high is None:
                high = await conn.fetchval(SELECT_LAST_RES_ID, res_type, low)
            if high is None:
                break
            seqs.append(len(seqs))
            types.append(res_type)
            lows.append(low)
            highs.append(high)
            low = high
    if seqs:
        await conn.execute(INSERT_CHUNKS, job_id, seqs, types, lows, highs)
    return len(seqs)


async def _estimate(conn: Connection, types: list[str], parameters: dict[str, Any], catalog: Catalog) -> int:
    """The resources the chunks will read: live ones, and of a filtered type only those its filters match."""
    filters: dict[str, list[str]] = parameters.get("filters", {})
    estimate: int = await conn.fetchval(COUNT_LIVE, [res_type for res_type in types if not filters.get(res_type)])
    for res_type in types:
        if queries := filters.get(res_type):
            statement = count_read(catalog.registry, parameters["base"], res_type, queries, MAX_RES_ID)
            estimate += await conn.fetchval(statement.text, *statement.params)
    return estimate

