"""A job's final transaction sweeps the resources of its types indexed below its generation after their
chunk was done (here as a replica of the previous release writes them: without the change log's lock,
with its lagging catalog), before it marks the custom parameter changes indexed."""

from __future__ import annotations

import orjson

from service.http.keys import CATALOG, POOL
from service.jobs.planning import plan_next_job
from service.jobs.reindex_step import run_chunk
from service.jobs.repository import claim_chunk, finish_chunk
from service.jobs.start import ReindexPlan, covers, start_reindex
from service.jobs.sweep import Sweeper
from service.search.param_hash import sp_hash
from service.search.registry import Registry
from service.search.rows import fingerprint
from tests.test_lagging_replica import put, search
from tests.test_reindex_modes import ALIAS

OWNER = "test-worker"


async def write_as_the_previous_release(db, fhir_id: str) -> None:
    """What a replica of the previous release leaves when it updates a resource with a catalog from before
    the custom parameter: no alias rows, generation 0, its fingerprint of its rows."""
    res_id, body = await db.fetchrow("SELECT res_id, body FROM resource WHERE fhir_id = $1", fhir_id)
    await db.execute("DELETE FROM idx_string WHERE res_id = $1 AND sp_hash = $2", res_id,
                     sp_hash("Organization", "alias"))
    await db.execute("DELETE FROM idx_missing WHERE res_id = $1 AND sp_hash = $2", res_id,
                     sp_hash("Organization", "alias"))
    old_rows = fingerprint(Registry.builtin().extract(orjson.loads(body)))
    # Its extractor stays recorded: a resource of no recorded extractor would also make the app's upkeep
    # start an upgrade reindex, whose chunks this test's hand-run worker could then claim.
    await db.execute("UPDATE resource SET index_gen = 0, index_hash = $2 WHERE res_id = $1", res_id, old_rows)


async def run_job_with_writes_between_chunks(client, db, batch_size: int, stragglers: list[str]) -> str:
    """A job over the Organizations, one per chunk, run here chunk by chunk; after the chunks of
    `stragglers` are done, those resources are written as the previous release would. Returns the report."""
    pool, catalogs = client.server.app[POOL], client.server.app[CATALOG]
    generation = catalogs.current.generation
    started = await start_reindex(pool, ReindexPlan(types=("Organization",), batch_size=batch_size), generation,
                                  chunk_size=1)
    await plan_next_job(pool, catalogs, covers)  # what a worker does first
    async with pool.acquire() as read_conn, pool.acquire() as write_conn:
        while chunk := await claim_chunk(write_conn, OWNER, 60):
            await run_chunk(read_conn, write_conn, chunk, catalogs, OWNER, 60)
            if chunk.seq == len(stragglers):  # the chunks of the stragglers are done, more remain
                for fhir_id in stragglers:
                    await write_as_the_previous_release(db, fhir_id)
            await finish_chunk(write_conn, chunk, OWNER, covers, Sweeper(catalogs))
    job = await db.fetchrow("SELECT state, report FROM job WHERE id = $1", started.job_id)
    assert job["state"] == "completed"
    return str(job["report"])


async def store_organizations_then_the_parameter(client) -> None:
    for number in range(1, 5):
        await put(client, {"resourceType": "Organization", "id": f"o{number}", "alias": [f"Zeta {number}"]})
    await put(client, ALIAS)


async def test_resources_written_below_the_generation_after_their_chunk_are_swept(client, db):
    await store_organizations_then_the_parameter(client)
    report = await run_job_with_writes_between_chunks(client, db, batch_size=10, stragglers=["o1"])
    generation = await db.fetchval("SELECT max(generation) FROM search_parameter_change")
    assert (f"Organization: 1 resources written below generation {generation} after their chunk was done were "
            "re-extracted") in report
    assert not await db.fetchval("SELECT count(*) FROM search_parameter_change WHERE NOT indexed")
    assert await search(client, "Organization?alias=zeta%201") == (["o1"], [])
    assert await db.fetchval("SELECT s.index_gen FROM resource_index_state s JOIN resource USING (res_id) "
                             "WHERE fhir_id = 'o1'") == generation


async def test_more_than_a_batch_of_them_leave_the_parameter_pending(client, db):
    await store_organizations_then_the_parameter(client)
    report = await run_job_with_writes_between_chunks(client, db, batch_size=1, stragglers=["o1", "o2"])
    assert "its parameters stay pending until the next $reindex of the type" in report
    assert await db.fetchval("SELECT count(*) FROM search_parameter_change WHERE NOT indexed") == 1
    found, warnings = await search(client, "Organization?alias=zeta%202")
    assert found == [] and "Organization:alias" in warnings[0]["issue"][0]["diagnostics"]  # not silent
