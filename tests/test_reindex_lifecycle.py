"""Jobs that always end: a worker mid-chunk cannot write into an ended job, leases outlive slow batches,
a graceful hand-back is not an attempt, and a cancelled job ends even when its chunk holder dies."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import pytest

from service.app import create_app
from service.db import create_pool
from service.http.keys import CATALOG, POOL
from service.jobs.reindex_step import JobEnded, run_chunk
from service.jobs.repository import request_cancel
from service.jobs.start import ReindexPlan, start_reindex
from tests.test_process import free_port
from tests.test_reindex_engine import chunk_totals, claim_planned, wait_ended, wipe_indexes
from tests.test_reindex_faults import wait_progress

LEASE = 2.0  # seconds: short, so the tests wait little, and long enough that a loaded machine renews in time
POLL = 0.2


@pytest.mark.dataset("plannet")
async def test_a_worker_mid_chunk_cannot_write_once_the_job_has_ended(client, db):
    await wipe_indexes(db, "Organization")
    pool = client.server.app[POOL]
    started = await start_reindex(pool, ReindexPlan(types=("Organization",), batch_size=10), 0)
    async with pool.acquire() as conn:
        # A worker claims the chunk, then stalls past its lease; meanwhile the job is cancelled, and as no
        # live lease holds a chunk, it ends at once with its report.
        chunk = await claim_planned(client.server.app, conn, "stalled", lease_seconds=0.1)
        await asyncio.sleep(0.2)
        assert await request_cancel(conn, started.job_id) == "in_progress"
    job = await wait_ended(db, started.job_id, timeout=1)
    assert job["state"] == "cancelled" and "Total Resources Changed   : 0 " in job["report"]

    # The stalled worker wakes up: its first checkpoint refuses, and the batch is rolled back.
    async with pool.acquire() as read_conn, pool.acquire() as write_conn:
        with pytest.raises(JobEnded):
            await run_chunk(read_conn, write_conn, chunk, client.server.app[CATALOG], "stalled", 60)
    assert (await chunk_totals(db, started.job_id))["processed"] == 0  # what the report says
    assert await db.fetchval("SELECT count(*) FROM resource_index_state WHERE index_hash IS NOT NULL "
                             "AND res_type = 'Organization'") == 0


@asynccontextmanager
async def first_resource_locked(database_url: str, res_type: str) -> AsyncIterator[None]:
    """Hold a row lock on the index state of the type's first resource, which a job's first batch must update:
    the batch waits."""
    blocker = await asyncpg.connect(database_url)
    try:
        async with blocker.transaction():
            await blocker.execute("SELECT FROM resource_index_state WHERE res_id = (SELECT min(res_id) "
                                  "FROM resource_index_state WHERE res_type = $1) FOR UPDATE", res_type)
            yield
    finally:
        await blocker.close()


async def batch_waiting(db) -> None:
    async with asyncio.timeout(10):
        while not await db.fetchval("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                    "AND wait_event_type = 'Lock'"):
            await asyncio.sleep(0.05)


@pytest.mark.dataset("plannet")
async def test_a_batch_slower_than_the_lease_keeps_its_chunk(aiohttp_client, settings, db, database_url):
    practitioners = await wipe_indexes(db, "Practitioner")
    replica = settings.model_copy(update={"reindex_workers": 1, "reindex_poll_seconds": POLL,
                                          "reindex_lease_seconds": LEASE})
    first = await aiohttp_client(create_app(replica))
    await aiohttp_client(create_app(replica))  # a second replica, idle, ready to take an expired lease over
    async with first_resource_locked(database_url, "Practitioner"):
        started = await start_reindex(first.server.app[POOL], ReindexPlan(types=("Practitioner",)), 0)
        await batch_waiting(db)
        await asyncio.sleep(2 * LEASE)
        assert await db.fetchval("SELECT sum(attempts) FROM job_chunk WHERE job_id = $1", started.job_id) == 1
    job = await wait_ended(db, started.job_id)
    assert job["state"] == "completed"
    totals = await chunk_totals(db, started.job_id)
    assert (totals["processed"], totals["changed"], totals["attempts"]) == (practitioners, practitioners, 1)


@pytest.mark.dataset("plannet")
async def test_a_cancel_stops_a_slow_batch_at_the_next_heartbeat(aiohttp_client, settings, db, database_url):
    await wipe_indexes(db, "Practitioner")
    replica = settings.model_copy(update={"reindex_workers": 1, "reindex_poll_seconds": POLL,
                                          "reindex_lease_seconds": LEASE})
    client = await aiohttp_client(create_app(replica))
    async with first_resource_locked(database_url, "Practitioner"):
        started = await start_reindex(client.server.app[POOL], ReindexPlan(types=("Practitioner",)), 0)
        await batch_waiting(db)
        async with client.server.app[POOL].acquire() as conn:
            assert await request_cancel(conn, started.job_id) == "in_progress"
        # Ended while the batch would still wait: a heartbeat (every third of the lease) saw the cancel.
        assert (await wait_ended(db, started.job_id, timeout=LEASE))["state"] == "cancelled"
    assert (await chunk_totals(db, started.job_id))["processed"] == 0
    assert await db.fetchval("SELECT count(*) FROM resource_index_state WHERE res_type = 'Practitioner' "
                             "AND index_hash IS NOT NULL") == 0


@pytest.mark.dataset("plannet")
async def test_a_chunk_handed_back_at_shutdown_is_not_an_attempt(aiohttp_client, settings, db):
    await wipe_indexes(db, "Practitioner")
    replica = settings.model_copy(update={"reindex_workers": 1, "reindex_poll_seconds": 0.2})
    leaving = await aiohttp_client(create_app(replica))
    started = await start_reindex(leaving.server.app[POOL], ReindexPlan(types=("Practitioner",), batch_size=2), 0)
    async with asyncio.timeout(30):
        while not await db.fetchval("SELECT sum(processed) FROM job_chunk WHERE job_id = $1", started.job_id):
            await asyncio.sleep(0.01)
    await leaving.close()  # a graceful shutdown (SIGTERM): the worker hands its chunk back
    chunk = await db.fetchrow("SELECT state, owner, attempts FROM job_chunk WHERE job_id = $1", started.job_id)
    assert (chunk["state"], chunk["owner"], chunk["attempts"]) == ("pending", None, 0)

    await aiohttp_client(create_app(replica))
    assert (await wait_ended(db, started.job_id))["state"] == "completed"
    assert (await chunk_totals(db, started.job_id))["attempts"] == 1


@pytest.mark.dataset("plannet")
async def test_a_cancelled_job_ends_when_its_chunk_holder_dies_before_it_sees_the_cancel(
        aiohttp_client, settings, database_url, db, tmp_path):
    await wipe_indexes(db, "Practitioner")
    env = {**os.environ, "DATABASE_URL": database_url, "FHIR_PORT": str(free_port()), "FHIR_AUTH_MODE": "unsigned",
           "FHIR_REINDEX_WORKERS": "1", "FHIR_REINDEX_LEASE_SECONDS": str(LEASE),
           "FHIR_REINDEX_POLL_SECONDS": str(POLL)}
    with (tmp_path / "worker.log").open("wb") as log:
        holder = subprocess.Popen([sys.executable, "-m", "service"], env=env, stdout=log, stderr=subprocess.STDOUT)
    plan = ReindexPlan(types=("Practitioner",), batch_size=5)
    try:
        pool = await create_pool(database_url, settings)
        try:
            started = await start_reindex(pool, plan, 0)
            await wait_progress(db, started.job_id)
            replica = settings.model_copy(update={"reindex_workers": 1, "reindex_poll_seconds": POLL,
                                                  "reindex_lease_seconds": LEASE})
            client = await aiohttp_client(create_app(replica))  # idle: the one chunk is the holder's
            holder.send_signal(signal.SIGSTOP)  # frozen: it can no longer see the cancel
            async with pool.acquire() as conn:
                assert await request_cancel(conn, started.job_id) == "in_progress"
            cancelled_at = time.monotonic()
            holder.send_signal(signal.SIGKILL)  # and dies with its lease still live
        finally:
            await pool.close()
    finally:
        holder.kill()
        holder.wait(timeout=10)
    assert (await db.fetchrow("SELECT state FROM job WHERE id = $1", started.job_id))["state"] == "in_progress"

    job = await wait_ended(db, started.job_id, timeout=LEASE + POLL + 1)  # an idle worker of the replica ends it
    assert job["state"] == "cancelled"
    assert time.monotonic() - cancelled_at < LEASE + POLL + 1
    again = await start_reindex(client.server.app[POOL], plan, 0)
    assert not again.already_running and again.job_id != started.job_id
