"""The reindex job engine against real Postgres: exact indexes after a run, resumption from a dead
worker's checkpoint, shared jobs, cancel, optimistic locking, pending parameters becoming ready."""

from __future__ import annotations

import asyncio
import dataclasses

import asyncpg
import pytest

from service.app import create_app
from service.http.keys import CATALOG, POOL
from service.jobs.planning import plan_next_job
from service.jobs.reindex_batch import PreparedBatch, prepare_batch, write_prepared
from service.jobs.reindex_step import READ_CHUNK, run_chunk
from service.jobs.repository import ClaimedChunk, claim_chunk, request_cancel
from service.jobs.start import ReindexPlan, covers, start_reindex
from service.jobs.stored_rows import prepare_compared
from service.search.registry import Registry
from tests.indexes import expected_index_rows, stored_index_rows

FHIR_JSON = {"Content-Type": "application/fhir+json"}


@pytest.fixture
def worker_settings(settings):
    return settings.model_copy(update={"reindex_workers": 1, "reindex_poll_seconds": 0.2})


async def wipe_indexes(db, res_type: str) -> int:
    """Make a type's indexes stale: no rows, never indexed (no fingerprint). Returns its resource count."""
    for table in ("idx_string", "idx_token", "idx_date", "idx_number", "idx_quantity", "idx_uri",
                  "idx_reference", "idx_missing"):
        await db.execute(f"DELETE FROM {table} WHERE res_id IN (SELECT res_id FROM resource WHERE res_type = $1)",
                         res_type)
    await db.execute("UPDATE resource_index_state SET index_gen = -1, index_hash = NULL WHERE res_type = $1", res_type)
    return await db.fetchval("SELECT count(*) FROM resource WHERE res_type = $1 AND NOT deleted", res_type)


async def wait_ended(db, job_id, timeout: float = 60) -> asyncpg.Record:
    async with asyncio.timeout(timeout):
        while True:
            job = await db.fetchrow("SELECT * FROM job WHERE id = $1", job_id)
            if job["state"] in ("completed", "failed", "cancelled"):
                return job
            await asyncio.sleep(0.05)


async def claim_planned(app, conn, owner: str, lease_seconds: float) -> ClaimedChunk:
    """What a worker does: plan the queued job, then claim its first chunk."""
    await plan_next_job(app[POOL], app[CATALOG], covers)
    chunk = await claim_chunk(conn, owner, lease_seconds)
    assert chunk is not None
    return chunk


async def first_batch_prepared(client, plan: ReindexPlan) -> tuple[PreparedBatch, ReindexPlan]:
    """A job of `plan` started, and the first batch of its first chunk read and extracted as a worker does."""
    pool = client.server.app[POOL]
    await start_reindex(pool, plan, 0)
    async with pool.acquire() as conn:
        chunk = await claim_planned(client.server.app, conn, "w", 60)
        read = await conn.fetch(READ_CHUNK, chunk.res_type, chunk.checkpoint, chunk.hi)
        plan = ReindexPlan.from_parameters(chunk.parameters)
        return await prepare_compared(conn, chunk.res_type, read, client.server.app[CATALOG].current, plan), plan


async def chunk_totals(db, job_id) -> asyncpg.Record:
    return await db.fetchrow("SELECT sum(processed) AS processed, sum(changed) AS changed, "
                             "sum(unchanged) AS unchanged, max(attempts) AS attempts FROM job_chunk WHERE job_id = $1",
                             job_id)


@pytest.mark.dataset("plannet")
async def test_reindex_restores_exactly_the_indexes_of_a_clean_extraction(aiohttp_client, worker_settings, db):
    organizations = await wipe_indexes(db, "Organization")
    client = await aiohttp_client(create_app(worker_settings))
    pool = client.server.app[POOL]
    started = await start_reindex(pool, ReindexPlan(types=("Organization",), batch_size=50), 0, chunk_size=60)
    job = await wait_ended(db, started.job_id)
    assert job["state"] == "completed"
    totals = await chunk_totals(db, started.job_id)
    assert (totals["processed"], totals["changed"], totals["unchanged"]) == (organizations, organizations, 0)
    assert await stored_index_rows(db) == await expected_index_rows(db, Registry.builtin())

    again = await start_reindex(pool, ReindexPlan(types=("Organization",)), 0)
    await wait_ended(db, again.job_id)
    totals = await chunk_totals(db, again.job_id)
    assert (totals["changed"], totals["unchanged"]) == (0, organizations)  # current rows cost only a read


@pytest.mark.dataset("plannet")
async def test_identical_running_job_is_shared_and_empty_job_completes(aiohttp_client, settings, db):
    client = await aiohttp_client(create_app(settings))  # no workers: the job stays queued
    pool = client.server.app[POOL]
    first = await start_reindex(pool, ReindexPlan(types=("Organization",)), 0)
    second = await start_reindex(pool, ReindexPlan(types=("Organization",)), 0)
    assert (second.job_id, second.already_running, first.already_running) == (first.job_id, True, False)
    empty = await start_reindex(pool, ReindexPlan(types=("Account",)), 0)
    assert (await db.fetchrow("SELECT state FROM job WHERE id = $1", empty.job_id))["state"] == "completed"


@pytest.mark.dataset("plannet")
async def test_a_dead_workers_chunk_is_resumed_from_its_checkpoint(aiohttp_client, settings, worker_settings, db):
    organizations = await wipe_indexes(db, "Organization")
    idle = await aiohttp_client(create_app(settings))
    pool = idle.server.app[POOL]
    started = await start_reindex(pool, ReindexPlan(types=("Organization",), batch_size=20), 0,
                                  chunk_size=organizations)
    # A worker claims the single chunk, writes its first half, and dies without a word: its lease runs out.
    async with pool.acquire() as conn:
        chunk = await claim_planned(idle.server.app, conn, "dead-worker", lease_seconds=0.5)
    half = await db.fetchval("SELECT res_id FROM resource WHERE res_type = 'Organization' ORDER BY res_id "
                             "OFFSET $1 LIMIT 1", organizations // 2)
    async with pool.acquire() as read_conn, pool.acquire() as write_conn:
        await run_chunk(read_conn, write_conn, dataclasses.replace(chunk, hi=half), idle.server.app[CATALOG],
                        "dead-worker", 0.5)
    checkpoint = await db.fetchval("SELECT checkpoint FROM job_chunk WHERE job_id = $1", started.job_id)
    assert checkpoint == half

    await aiohttp_client(create_app(worker_settings))  # a live replica takes over after the lease
    job = await wait_ended(db, started.job_id)
    assert job["state"] == "completed"
    totals = await chunk_totals(db, started.job_id)
    assert totals["processed"] == organizations  # no resource processed twice
    assert totals["attempts"] == 2
    assert await stored_index_rows(db) == await expected_index_rows(db, Registry.builtin())


@pytest.mark.dataset("plannet")
async def test_two_replicas_share_one_job(aiohttp_client, worker_settings, db):
    await wipe_indexes(db, "Practitioner")
    await wipe_indexes(db, "PractitionerRole")
    first = await aiohttp_client(create_app(worker_settings))
    await aiohttp_client(create_app(worker_settings))
    started = await start_reindex(first.server.app[POOL], ReindexPlan(types=("Practitioner", "PractitionerRole"),
                                                                      batch_size=100), 0, chunk_size=200)
    job = await wait_ended(db, started.job_id)
    assert job["state"] == "completed"
    chunks = await db.fetch("SELECT attempts, owner FROM job_chunk WHERE job_id = $1", started.job_id)
    assert len(chunks) > 10 and all(chunk["attempts"] == 1 for chunk in chunks)  # none processed twice
    totals = await chunk_totals(db, started.job_id)
    assert totals["processed"] == await db.fetchval(
        "SELECT count(*) FROM resource WHERE res_type IN ('Practitioner', 'PractitionerRole')")
    assert await stored_index_rows(db) == await expected_index_rows(db, Registry.builtin())


@pytest.mark.dataset("plannet")
async def test_cancel_stops_the_job(aiohttp_client, worker_settings, db):
    client = await aiohttp_client(create_app(worker_settings))
    pool = client.server.app[POOL]
    started = await start_reindex(pool, ReindexPlan(batch_size=1, force=True), 0, chunk_size=100_000)
    async with asyncio.timeout(30):
        while not await db.fetchval("SELECT sum(processed) FROM job_chunk WHERE job_id = $1", started.job_id):
            await asyncio.sleep(0.01)
    async with pool.acquire() as conn:
        assert await request_cancel(conn, started.job_id) == "in_progress"
    job = await wait_ended(db, started.job_id, timeout=10)
    assert job["state"] == "cancelled"
    processed = await db.fetchval("SELECT sum(processed) FROM job_chunk WHERE job_id = $1", started.job_id)
    assert processed < await db.fetchval("SELECT count(*) FROM resource")


async def test_a_resource_updated_during_the_batch_keeps_its_own_indexes(client, db):
    org = {"resourceType": "Organization", "id": "o1", "name": "Old name"}
    assert (await client.put("/fhir/Organization/o1", json=org, headers=FHIR_JSON)).status == 201
    pool = client.server.app[POOL]
    started = await start_reindex(pool, ReindexPlan(types=("Organization",), force=True), 0)
    async with pool.acquire() as conn:
        chunk = await claim_planned(client.server.app, conn, "w", 60)
        stale = await conn.fetch(READ_CHUNK, "Organization", chunk.checkpoint, chunk.hi)
    updated = await client.put("/fhir/Organization/o1", json={**org, "name": "New name"}, headers=FHIR_JSON)
    assert updated.status == 200
    plan = ReindexPlan.from_parameters(chunk.parameters)
    batch = await prepare_batch("Organization", stale, client.server.app[CATALOG].current, plan)
    async with pool.acquire() as conn, conn.transaction():
        outcome = await write_prepared(conn, "Organization", batch, plan)
    assert (outcome.changed, outcome.unchanged) == (0, 1)
    names = {row[0] for row in await db.fetch("SELECT exact FROM idx_string WHERE exact LIKE '% name'")}
    assert names == {"New name"}
    assert started.job_id


async def test_rows_rewritten_since_the_read_are_left_alone(client, db):
    org = {"resourceType": "Organization", "id": "o1", "name": "Acme"}
    assert (await client.put("/fhir/Organization/o1", json=org, headers=FHIR_JSON)).status == 201
    # Unknown rows, one of them stray: the job would rewrite them.
    await db.execute("INSERT INTO idx_uri (res_id, sp_hash, uri) SELECT res_id, 1, 'stray' FROM resource")
    await db.execute("UPDATE resource_index_state SET index_hash = NULL")
    pool = client.server.app[POOL]
    batch, plan = await first_batch_prepared(client, ReindexPlan(types=("Organization",)))
    # Meanwhile another job (or an instance $reindex) rewrites the rows without a new version.
    await db.execute("UPDATE resource_index_state SET index_hash = 42")
    async with pool.acquire() as conn, conn.transaction():
        outcome = await write_prepared(conn, "Organization", batch, plan)
    assert batch.extracted[0].differs and (outcome.changed, outcome.unchanged) == (0, 1)
    assert await db.fetchval("SELECT index_hash FROM resource_index_state") == 42
    assert await db.fetchval("SELECT count(*) FROM idx_uri WHERE uri = 'stray'") == 1
