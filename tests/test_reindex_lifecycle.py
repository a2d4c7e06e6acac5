"""Jobs that always end: a worker mid-chunk cannot write into an ended job, leases outlive slow batches,
a graceful hand-back is not an attempt, and a cancelled job ends even when its chunk holder dies."""

from __future__ import annotations

import asyncio

import pytest

from service.http.keys import CATALOG, POOL
from service.jobs.reindex_step import JobEnded, run_chunk
from service.jobs.repository import claim_chunk, request_cancel
from service.jobs.start import ReindexPlan, start_reindex
from tests.test_reindex_engine import chunk_totals, wait_ended, wipe_indexes


@pytest.mark.dataset("plannet")
async def test_a_worker_mid_chunk_cannot_write_once_the_job_has_ended(client, db):
    await wipe_indexes(db, "Organization")
    pool = client.server.app[POOL]
    started = await start_reindex(pool, ReindexPlan(types=("Organization",), batch_size=10), 0)
    async with pool.acquire() as conn:
        # A worker claims the chunk, then stalls past its lease; meanwhile the job is cancelled, and as no
        # live lease holds a chunk, it ends at once with its report.
        chunk = await claim_chunk(conn, "stalled", lease_seconds=0.1)
        await asyncio.sleep(0.2)
        assert await request_cancel(conn, started.job_id) == "in_progress"
    job = await wait_ended(db, started.job_id, timeout=1)
    assert job["state"] == "cancelled" and "Total Resources Changed   : 0 " in job["report"]

    # The stalled worker wakes up: its first checkpoint refuses, and the batch is rolled back.
    async with pool.acquire() as read_conn, pool.acquire() as write_conn:
        with pytest.raises(JobEnded):
            await run_chunk(read_conn, write_conn, chunk, client.server.app[CATALOG], "stalled", 60)
    assert (await chunk_totals(db, started.job_id))["processed"] == 0  # what the report says
    assert await db.fetchval("SELECT count(*) FROM resource WHERE index_hash IS NOT NULL "
                             "AND res_type = 'Organization'") == 0
