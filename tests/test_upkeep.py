"""Upkeep: ended jobs are deleted after FHIR_JOB_RETENTION_DAYS by any replica, and compacting the
SearchParameter change log changes no answer of the catalog built from it."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from service.app import create_app
from service.fhir.resource_types import RESOURCE_TYPES
from service.http.keys import CATALOG, POOL
from service.jobs.planning import plan_chunks
from service.jobs.retention import JOBS_PER_STATEMENT, delete_expired_jobs
from service.jobs.start import ReindexPlan, start_reindex
from service.pools import create_pool
from service.search.catalog import Catalog, Catalogs
from service.search.registry import Registry
from service.store.change_log import compact_change_log
from service.store.search_parameters import refresh_catalog
from tests.test_reindex_engine import wait_ended

FHIR_JSON = {"Content-Type": "application/fhir+json"}
STATUS = "/fhir/$hapi.fhir.reindex-status?_jobId={}"
CHUNKS = "SELECT count(*) FROM job_chunk WHERE job_id = $1"


@pytest.fixture
def replica_settings(settings):
    """A replica with a worker that keeps ended jobs a week, and runs its upkeep every 0.1 s instead of hourly."""
    return settings.model_copy(update={"reindex_workers": 1, "reindex_poll_seconds": 0.2, "job_retention_days": 7,
                                       "upkeep_interval_seconds": 0.1})


async def put(client, resource: dict) -> None:
    response = await client.put(f"/fhir/{resource['resourceType']}/{resource['id']}", json=resource, headers=FHIR_JSON)
    assert response.status in (200, 201), await response.text()


async def run_job(client, db, plan: ReindexPlan) -> asyncpg.Record:
    generation = client.server.app[CATALOG].current.generation
    started = await start_reindex(client.server.app[POOL], plan, generation)
    job = await wait_ended(db, started.job_id)
    assert job["state"] == "completed"
    return job


async def test_retention_deletes_a_job_older_than_the_setting_and_keeps_a_newer_one(aiohttp_client, replica_settings,
                                                                                     db):
    client = await aiohttp_client(create_app(replica_settings))
    for number in range(3):
        await put(client, {"resourceType": "Organization", "id": f"org-{number}", "name": f"Org {number}"})
    old, newer = [(await run_job(client, db, ReindexPlan(batch_size=size)))["id"] for size in (1, 2)]
    assert await db.fetchval(CHUNKS, old) and await db.fetchval(CHUNKS, newer)
    await db.execute("UPDATE job SET ended_at = now() - interval '7 days 1 hour' WHERE id = $1", old)
    await db.execute("UPDATE job SET ended_at = now() - interval '6 days 23 hours' WHERE id = $1", newer)
    async with asyncio.timeout(10):
        while await db.fetchval("SELECT count(*) FROM job WHERE id = $1", old):
            await asyncio.sleep(0.05)
    assert await db.fetchval(CHUNKS, old) == 0
    assert (await client.get(STATUS.format(old))).status == 404
    assert (await client.get(STATUS.format(newer))).status == 200
    assert await db.fetchval(CHUNKS, newer) > 0


@pytest.mark.dataset("plannet/Endpoint.ndjson.gz")
async def test_replicas_deleting_at_once_delete_every_expired_job_once(database_url, settings, db):
    async with await create_pool(database_url, settings) as pool:
        expired = []
        for size in range(1, 3 * JOBS_PER_STATEMENT + 6):  # no worker here: each is ended by hand, long ago
            job_id = (await start_reindex(pool, ReindexPlan(batch_size=size), 0, chunk_size=10)).job_id
            await plan_chunks(db, job_id, ["Endpoint"], 10)  # what a worker does first
            await db.execute("UPDATE job SET state = 'completed', ended_at = now() - interval '31 days' "
                             "WHERE id = $1", job_id)
            expired.append(job_id)
        running = (await start_reindex(pool, ReindexPlan(), 0, chunk_size=10)).job_id
        # Old but not ended: kept whatever its age.
        await db.execute("UPDATE job SET created_at = now() - interval '1 year' WHERE id = $1", running)
        chunks = await db.fetchval("SELECT count(*) FROM job_chunk WHERE job_id = ANY($1::uuid[])", expired)
        assert chunks > len(expired)

        async def replica() -> int:
            async with pool.acquire() as conn:
                return await delete_expired_jobs(conn, 30)

        deleted = await asyncio.gather(*(replica() for _ in range(3)))
    assert sum(deleted) == len(expired)
    assert [row["id"] for row in await db.fetch("SELECT id FROM job")] == [running]
    assert await db.fetchval("SELECT count(*) FROM job_chunk WHERE job_id <> $1", running) == 0


NICKNAME = {"resourceType": "SearchParameter", "id": "nickname", "url": "http://example.org/sp/nickname",
            "name": "nickname", "status": "active", "code": "nickname", "base": ["Organization"], "type": "string",
            "description": "An organization's other names", "expression": "Organization.alias"}
SHORT_NAME = {**NICKNAME, "id": "short-name", "url": "http://example.org/sp/short-name", "code": "short-name",
              "base": ["Location"], "expression": "Location.alias"}
TRIAL = {**NICKNAME, "id": "trial", "url": "http://example.org/sp/trial", "code": "trial",
         "base": ["Practitioner"], "expression": "Practitioner.name.family"}


def answers(catalog: Catalog) -> dict:
    """Everything a catalog answers: its state key, pending codes, stale and unstored codes at every generation,
    parameters."""
    types = sorted(RESOURCE_TYPES)
    return {"generation": catalog.generation, "unindexed": catalog.unindexed,
            "pending": {t: catalog.pending_codes(t) for t in types},
            "stale": {(t, g): catalog.stale_codes(t, g) for t in types for g in range(catalog.generation + 2)},
            "unstored": {(t, g): catalog.unstored_codes(t, g) for t in types for g in range(catalog.generation + 2)},
            "parameters": {(t, p.definition.code): p.definition for t in types for p in catalog.registry.parameters(t)}}


async def catalog_answers(pool: asyncpg.Pool) -> dict:
    catalogs = Catalogs(Registry.builtin())
    assert await refresh_catalog(pool, catalogs)
    return answers(catalogs.current)


async def test_compacting_the_change_log_changes_no_answer_of_the_catalog(aiohttp_client, settings, db):
    client = await aiohttp_client(create_app(settings.model_copy(update={"reindex_workers": 1,
                                                                         "reindex_poll_seconds": 0.2})))
    await put(client, {"resourceType": "Organization", "id": "org-1", "name": "Acme", "alias": ["Speedy"]})
    # Edits of one parameter, a move to more types and a rename; a retired parameter; a deleted one.
    for expression in ("Organization.alias", "Organization.name", "Organization.alias | Organization.name"):
        await put(client, {**NICKNAME, "expression": expression})
    moved = {**NICKNAME, "base": ["Organization", "Location"], "expression": "Organization.alias | Location.alias"}
    await put(client, moved)
    await put(client, {**moved, "code": "moniker"})
    await put(client, SHORT_NAME)
    await put(client, {**SHORT_NAME, "status": "retired"})
    await put(client, TRIAL)
    assert (await client.delete("/fhir/SearchParameter/trial")).status == 200
    await run_job(client, db, ReindexPlan())  # every change so far is indexed
    # Changes after the job stay pending.
    await put(client, {**moved, "code": "moniker", "expression": "Organization.name | Location.name"})
    await put(client, {**TRIAL, "base": ["Practitioner", "Patient"], "expression": "Practitioner.name | Patient.name"})

    pool = client.server.app[POOL]
    before = await catalog_answers(pool)
    assert before == answers(client.server.app[CATALOG].current)  # what the serving replica holds
    logged = await db.fetchval("SELECT count(*) FROM search_parameter_change")
    async with pool.acquire() as conn:
        deleted = await compact_change_log(conn)
        assert await compact_change_log(conn) == 0
    assert 0 < deleted < logged
    assert await db.fetchval("SELECT count(*) FROM search_parameter_change") == logged - deleted
    assert await catalog_answers(pool) == before
