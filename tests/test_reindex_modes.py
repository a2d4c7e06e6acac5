"""What a reindex job rewrites: only the rows of changed parameters, only on their types; everything when
forced; stored bodies with optimizeStorage; and a worker whose catalog lags behind the job catches up."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from service.app import create_app
from service.http.keys import CATALOG, POOL
from service.jobs.start import ReindexPlan, start_reindex
from service.jobs.worker import ReindexWorkers, WorkerSettings
from service.search.catalog import Catalogs
from service.search.param_hash import sp_hash
from service.search.registry import Registry
from service.store.change_log import compact_change_log
from service.store.indexes import TABLE_COLUMNS
from tests.indexes import expected_index_rows, fingerprint_mismatches, stored_index_rows
from tests.test_reindex_engine import chunk_totals, wait_ended
from tests.test_reindex_http import parameters, poll_until_ended

FHIR_JSON = {"Content-Type": "application/fhir+json"}
BODIES = "SELECT version, body FROM resource_version"
ALIAS = {"resourceType": "SearchParameter", "id": "org-alias", "url": "http://example.org/SearchParameter/org-alias",
         "name": "alias", "status": "active", "description": "An organization's aliases", "code": "alias",
         "base": ["Organization"], "type": "string", "expression": "Organization.alias"}
# Every index row with its physical address: a row rewritten by DELETE and COPY gets a new ctid.
ROW_ADDRESSES = " UNION ALL ".join(
    f"SELECT '{table}' AS tbl, ctid::text AS ctid, res_id, sp_hash FROM {table}" for table in TABLE_COLUMNS)


ORGANIZATIONS_AND_ENDPOINTS = pytest.mark.dataset("plannet/Organization.ndjson.gz", "plannet/Endpoint.ndjson.gz")


@pytest.fixture
async def organizations_and_endpoints(db):
    """Counts per type of a database holding Plan-Net's Organizations and Endpoints (mark the test with
    ORGANIZATIONS_AND_ENDPOINTS)."""
    return {row["res_type"]: row["count"] for row in await db.fetch(
        "SELECT res_type, count(*) FROM resource GROUP BY res_type")}


@pytest.fixture
def worker_settings(settings):
    return settings.model_copy(update={"reindex_workers": 1, "reindex_poll_seconds": 0.2})


def registry_with(*search_parameters: dict) -> Registry:
    registry = Registry.builtin()
    for resource in search_parameters:
        registry.add_resource(resource)
    return registry


async def run_job(client, plan: ReindexPlan, db) -> dict:
    started = await start_reindex(client.server.app[POOL], plan, client.server.app[CATALOG].current.generation)
    assert (await wait_ended(db, started.job_id))["state"] == "completed"
    return dict(await chunk_totals(db, started.job_id))


@ORGANIZATIONS_AND_ENDPOINTS
async def test_a_parameter_change_rewrites_only_its_rows_on_its_types(aiohttp_client, worker_settings, db,
                                                                      organizations_and_endpoints):
    client = await aiohttp_client(create_app(worker_settings))
    before = {tuple(row) for row in await db.fetch(ROW_ADDRESSES)}
    endpoint_versions = await db.fetch("SELECT res_id, xmin::text FROM resource WHERE res_type = 'Endpoint'")
    assert (await client.put("/fhir/SearchParameter/org-alias", json=ALIAS, headers=FHIR_JSON)).status == 201

    totals = await run_job(client, ReindexPlan(), db)  # every type
    organizations = organizations_and_endpoints["Organization"]
    endpoints = organizations_and_endpoints["Endpoint"]
    # Each Organization gains an alias row or a :missing row; Endpoints and the SearchParameter are current.
    assert (totals["processed"], totals["changed"]) == (organizations + endpoints + 1, organizations)
    assert await db.fetch("SELECT res_id, xmin::text FROM resource WHERE res_type = 'Endpoint'") == endpoint_versions
    alias = sp_hash("Organization", "alias")
    loaded = {row[2] for row in before}
    after = {tuple(row) for row in await db.fetch(ROW_ADDRESSES) if row["res_id"] in loaded}  # not the new SP
    assert {row for row in before if row[3] != alias} == {row for row in after if row[3] != alias}
    assert {row for row in after if row[3] == alias}  # the new code's rows, and only those, were written
    assert await stored_index_rows(db) == await expected_index_rows(db, registry_with(ALIAS))
    # Only the alias rows were extracted, yet each fingerprint is that of all the resource's rows.
    assert await fingerprint_mismatches(db, registry_with(ALIAS)) == []

    again = await run_job(client, ReindexPlan(), db)
    assert (again["changed"], again["unchanged"]) == (0, again["processed"])  # all current: a read each


INTRODUCED = "SELECT base, introduced FROM search_parameter_code WHERE code = $1 ORDER BY base"


@ORGANIZATIONS_AND_ENDPOINTS
async def test_a_redefined_code_has_its_rows_replaced_even_once_its_first_change_is_compacted(
        aiohttp_client, worker_settings, db, organizations_and_endpoints):
    """A code first in force after a resource was indexed has no rows of it (its rows are written without a
    look at the tables); a redefined code has, from the first definition on, however the change log is
    compacted."""
    client = await aiohttp_client(create_app(worker_settings))
    assert (await client.put("/fhir/SearchParameter/org-alias", json=ALIAS, headers=FHIR_JSON)).status == 201
    first = await db.fetchval("SELECT max(generation) FROM search_parameter_change")
    assert [tuple(row) for row in await db.fetch(INTRODUCED, "alias")] == [("Organization", first)]
    await run_job(client, ReindexPlan(types=("Organization",)), db)
    for expression in ("Organization.name", "Organization.alias | Organization.name"):
        redefined = {**ALIAS, "expression": expression}
        assert (await client.put("/fhir/SearchParameter/org-alias", json=redefined, headers=FHIR_JSON)).status == 200
    async with client.server.app[POOL].acquire() as conn:
        assert await compact_change_log(conn) == 1  # the first change, indexed and covered by later ones
    await client.close()
    # The log no longer holds the code's first change; its generation is still on record, and a replica that
    # starts now reads it.
    assert await db.fetchval("SELECT min(generation) FROM search_parameter_change WHERE code = 'alias'") > first
    assert [tuple(row) for row in await db.fetch(INTRODUCED, "alias")] == [("Organization", first)]
    client = await aiohttp_client(create_app(worker_settings))

    totals = await run_job(client, ReindexPlan(types=("Organization",)), db)
    assert totals["changed"] == organizations_and_endpoints["Organization"]
    assert await stored_index_rows(db) == await expected_index_rows(db, registry_with(redefined))
    assert await fingerprint_mismatches(db, registry_with(redefined)) == []


@ORGANIZATIONS_AND_ENDPOINTS
async def test_force_re_extracts_everything_and_rewrites_only_what_differs(aiohttp_client, worker_settings, db,
                                                                          organizations_and_endpoints):
    client = await aiohttp_client(create_app(worker_settings))
    resources = sum(organizations_and_endpoints.values())
    before, versions = await db.fetch(ROW_ADDRESSES), await db.fetch("SELECT res_id, xmin::text FROM resource")
    forced = await run_job(client, ReindexPlan(types=("Organization", "Endpoint"), force=True), db)
    assert (forced["processed"], forced["changed"]) == (resources, 0)
    assert await db.fetch(ROW_ADDRESSES) == before  # current rows: extracted and compared, not written
    assert await db.fetch("SELECT res_id, xmin::text FROM resource") == versions

    # Rows changed behind the service's back: the fingerprints cannot know. Invalidating them (as the README
    # says) makes the next job rewrite those resources whole.
    damaged = await db.execute("UPDATE idx_string SET normalized = 'damaged' WHERE res_id % 3 = 0")
    assert damaged != "UPDATE 0"
    await db.execute("UPDATE resource_index_state SET index_hash = NULL WHERE res_id % 3 = 0")
    intact = {tuple(row) for row in await db.fetch(ROW_ADDRESSES) if row["tbl"] != "idx_string"}
    repaired = await run_job(client, ReindexPlan(types=("Organization", "Endpoint")), db)
    damaged_resources = await db.fetchval("SELECT count(DISTINCT res_id) FROM idx_string WHERE res_id % 3 = 0")
    assert (repaired["processed"], repaired["changed"]) == (resources, damaged_resources)
    assert await stored_index_rows(db) == await expected_index_rows(db, Registry.builtin())
    # Compared with the stored rows, only the damaged rows were rewritten: the others kept their place.
    assert {tuple(row) for row in await db.fetch(ROW_ADDRESSES) if row["tbl"] != "idx_string"} == intact


# Bodies as another writer might have left them: indented, members reordered, a decimal with its trailing zero.
PRETTY = ("convert_to(jsonb_pretty(convert_from(body, 'UTF8')::jsonb || "
          "'{\"extension\": [{\"url\": \"http://example.org/x\", \"valueDecimal\": 1.50}]}'::jsonb), 'UTF8')")


def compacted(pretty: bytes, stored: bytes) -> bool:
    """`stored` is `pretty` without its whitespace: same content, the decimal as written."""
    return orjson.loads(stored) == orjson.loads(pretty) and b"1.50" in stored and len(stored) < len(pretty) and (
        b"\n" not in stored and b": " not in stored)


async def test_optimize_storage_rewrites_bodies_and_nothing_else(aiohttp_client, worker_settings, db):
    client = await aiohttp_client(create_app(worker_settings))
    org = {"resourceType": "Organization", "id": "o1", "name": "Acme"}
    assert (await client.put("/fhir/Organization/o1", json=org, headers=FHIR_JSON)).status == 201
    renamed = {**org, "name": "Acme Inc"}
    assert (await client.put("/fhir/Organization/o1", json=renamed, headers=FHIR_JSON)).status == 200
    await db.execute(f"UPDATE resource SET body = {PRETTY}")
    await db.execute(f"UPDATE resource_version SET body = {PRETTY} WHERE body IS NOT NULL")
    pretty = {row["version"]: bytes(row["body"]) for row in await db.fetch(BODIES)}
    indexes, state = await db.fetch(ROW_ADDRESSES), await db.fetchrow("SELECT version, last_updated FROM resource")

    async def storage_job(mode: str) -> dict:
        body = parameters(("url", "valueString", "Organization?"), ("reindexSearchParameters", "valueCode", "none"),
                          ("optimizeStorage", "valueCode", mode))
        started = await client.post("/fhir/$reindex", json=body, headers=FHIR_JSON)
        assert started.status == 202, await started.text()
        await poll_until_ended(client, started.headers["Content-Location"])
        return dict(await chunk_totals(db, (await db.fetchval("SELECT id FROM job ORDER BY created_at DESC LIMIT 1"))))

    assert (await storage_job("CURRENT_VERSION"))["changed"] == 1
    stored = {row["version"]: bytes(row["body"]) for row in await db.fetch(BODIES)}
    assert compacted(pretty[2], stored[2])
    assert stored[1] == pretty[1]  # older versions wait for ALL_VERSIONS
    assert bytes(await db.fetchval("SELECT body FROM resource")) == stored[2]
    assert await (await client.get("/fhir/Organization/o1")).read() == stored[2]

    assert (await storage_job("ALL_VERSIONS"))["changed"] == 1
    assert compacted(pretty[1], bytes(await db.fetchval("SELECT body FROM resource_version WHERE version = 1")))
    assert (await storage_job("ALL_VERSIONS"))["changed"] == 0  # canonical already: a read each
    assert await db.fetch(ROW_ADDRESSES) == indexes  # index rows untouched
    assert await db.fetchrow("SELECT version, last_updated FROM resource") == state


@ORGANIZATIONS_AND_ENDPOINTS
async def test_a_worker_whose_catalog_lags_catches_up_before_the_job(aiohttp_client, settings, db,
                                                                     organizations_and_endpoints):
    client = await aiohttp_client(create_app(settings))  # an API-only node: no workers
    assert (await client.put("/fhir/SearchParameter/org-alias", json=ALIAS, headers=FHIR_JSON)).status == 201
    pool = client.server.app[POOL]
    generation = await db.fetchval("SELECT max(generation) FROM search_parameter_change")
    started = await start_reindex(pool, ReindexPlan(types=("Organization",)), generation)
    # A replica that never heard of the new parameter (its NOTIFY lost, its poll not due yet).
    lagging = ReindexWorkers(pool, Catalogs(Registry.builtin()), WorkerSettings(count=1, poll_seconds=60))
    workers = asyncio.create_task(lagging.run())
    try:
        assert (await wait_ended(db, started.job_id))["state"] == "completed"
    finally:
        workers.cancel()
        await asyncio.gather(workers, return_exceptions=True)
    assert await stored_index_rows(db) == await expected_index_rows(db, registry_with(ALIAS))


@ORGANIZATIONS_AND_ENDPOINTS
async def test_overriding_a_built_in_code_and_removing_the_override(aiohttp_client, worker_settings, db,
                                                                    organizations_and_endpoints):
    """The override moves `name` rows from idx_string to idx_token; its deletion moves them back."""
    client = await aiohttp_client(create_app(worker_settings))
    name_as_token = {**ALIAS, "id": "org-name", "url": "http://example.org/SearchParameter/org-name", "name": "name",
                     "code": "name", "type": "token", "expression": "Organization.name"}
    assert (await client.put("/fhir/SearchParameter/org-name", json=name_as_token, headers=FHIR_JSON)).status == 201
    totals = await run_job(client, ReindexPlan(types=("Organization",)), db)
    assert totals["changed"] == organizations_and_endpoints["Organization"]
    assert await stored_index_rows(db) == await expected_index_rows(db, registry_with(name_as_token))
    assert await fingerprint_mismatches(db, registry_with(name_as_token)) == []
    name = sp_hash("Organization", "name")
    assert not await db.fetchval("SELECT count(*) FROM idx_string WHERE sp_hash = $1", name)

    assert (await client.delete("/fhir/SearchParameter/org-name")).status == 200
    await run_job(client, ReindexPlan(types=("Organization",)), db)
    assert await stored_index_rows(db) == await expected_index_rows(db, Registry.builtin())
    assert await fingerprint_mismatches(db, Registry.builtin()) == []
