"""A release whose extraction differs: resources indexed by the older extractor are stale by themselves,
and the replicas start the reindex that re-extracts them, comparing with the rows actually stored (not
with fingerprints, which say what the older release last wrote). No operator step."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from service.app import create_app
from service.http.keys import POOL
from service.jobs.upgrade import reindex_older_extractions
from service.search.extractor import Extractor, current
from service.search.param_hash import sp_hash
from service.search.registry import Registry
from tests.indexes import expected_index_rows, stored_index_rows
from tests.test_reindex_engine import chunk_totals
from tests.test_reindex_modes import ORGANIZATIONS_AND_ENDPOINTS, organizations_and_endpoints  # noqa: F401

ENDPOINT_STATUS = "http://hl7.org/fhir/endpoint-status"
MINE = current()


async def upgrade_job(db, timeout: float = 60) -> asyncpg.Record:
    """The job a replica started by itself, once it has ended."""
    async with asyncio.timeout(timeout):
        while True:
            job = await db.fetchrow("SELECT * FROM job WHERE created_by = 'upgrade'")
            if job is not None and job["state"] in ("completed", "failed", "cancelled"):
                return job
            await asyncio.sleep(0.05)


async def matches(client, query: str) -> int:
    bundle = await (await client.get(f"/fhir/{query}&_summary=count")).json(content_type=None)
    return int(bundle["total"])


@ORGANIZATIONS_AND_ENDPOINTS
@pytest.mark.parametrize("recorded", [Extractor(MINE.code - 1, MINE.unicode, MINE.definitions).number, None],
                         ids=["older extractor", "not recorded"])
async def test_resources_of_an_older_extractor_are_reindexed_without_an_operator_step(
        aiohttp_client, settings, db, organizations_and_endpoints, recorded):  # noqa: F811
    endpoints = organizations_and_endpoints["Endpoint"]
    # As the older release left them: Endpoint.status without its code system, and fingerprints that match
    # the current extraction (what a plain job of that release recorded after a change of its extractor).
    await db.execute("UPDATE idx_token SET system = NULL WHERE sp_hash = $1", sp_hash("Endpoint", "status"))
    await db.execute("UPDATE resource_index_state SET index_extractor = $1", recorded)

    replica = await aiohttp_client(create_app(settings.model_copy(
        update={"reindex_workers": 1, "reindex_poll_seconds": 0.2})))
    job = await upgrade_job(db)
    assert (job["state"], job["created_by_type"]) == ("completed", "SYSTEM")
    totals = await chunk_totals(db, job["id"])
    assert (totals["processed"], totals["changed"]) == (sum(organizations_and_endpoints.values()), endpoints)
    assert not await db.fetchval("SELECT count(*) FROM resource_index_state WHERE index_extractor IS DISTINCT FROM $1",
                                 MINE.number)
    assert await stored_index_rows(db) == await expected_index_rows(db, Registry.builtin())
    assert await matches(replica, f"Endpoint?status={ENDPOINT_STATUS}|active") == await matches(
        replica, "Endpoint?status=active") > 0


@ORGANIZATIONS_AND_ENDPOINTS
async def test_only_an_older_extraction_starts_a_job(client, db, organizations_and_endpoints):  # noqa: F811
    pool = client.server.app[POOL]
    assert await reindex_older_extractions(pool) is None  # all current
    newer = Extractor(MINE.code + 1, MINE.unicode, 0).number  # written by the next release, rolling out
    await db.execute("UPDATE resource_index_state SET index_extractor = $1 WHERE res_type = 'Endpoint'", newer)
    assert await reindex_older_extractions(pool) is None  # that release's replicas reindex, not this one's
    assert await db.fetchval("SELECT count(*) FROM job") == 0
    await db.execute("UPDATE resource_index_state SET index_extractor = NULL "
                     "WHERE res_id = (SELECT min(res_id) FROM resource_index_state)")
    job_id = await reindex_older_extractions(pool)
    assert await db.fetchval("SELECT parameters->'allTypes' FROM job WHERE id = $1", job_id) == "true"
    assert await reindex_older_extractions(pool) == job_id  # every replica's check joins the same job
