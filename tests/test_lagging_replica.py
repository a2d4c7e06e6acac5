"""A replica whose catalog lags behind the SearchParameter change log (its NOTIFY not delivered yet, its
poll hours away) still indexes its writes with the latest generation: searches never silently miss them."""

from __future__ import annotations

import asyncio

from service.app import create_app
from service.fhir.resource import Submitted
from service.http.keys import CATALOG, POOL
from service.search.catalog import Catalog, Catalogs
from service.search.registry import Registry
from service.store.bulk import write_batch
from tests.test_reindex_http import parameters, poll_until_ended

FHIR_JSON = {"Content-Type": "application/fhir+json"}
ALIAS_X = {"resourceType": "SearchParameter", "id": "alias-x", "url": "http://example.org/SearchParameter/alias-x",
           "name": "aliasX", "status": "active", "code": "alias-x", "base": ["Organization"], "type": "string",
           "description": "An organization's aliases", "expression": "Organization.alias"}


async def put(client, resource: dict) -> None:
    response = await client.put(f"/fhir/{resource['resourceType']}/{resource['id']}", json=resource, headers=FHIR_JSON)
    assert response.status in (200, 201), await response.text()


async def search(client, query: str) -> tuple[list[str], list[dict]]:
    """The ids found and the OperationOutcome entries (warnings) of a search."""
    bundle = await (await client.get(f"/fhir/{query}")).json(content_type=None)
    entries = bundle.get("entry", [])
    return ([e["resource"]["id"] for e in entries if e["search"]["mode"] == "match"],
            [e["resource"] for e in entries if e["search"]["mode"] == "outcome"])


async def caught_up(catalog_of_b, generation: int) -> None:
    """Wait until B has followed the change and the job's end (both NOTIFYs), as a healthy replica does."""
    async with asyncio.timeout(10):
        while (catalog_of_b.current.generation, catalog_of_b.current.unindexed) != (generation, 0):
            await asyncio.sleep(0.02)


async def test_a_write_on_a_lagging_replica_after_a_job_is_found_without_warning(aiohttp_client, settings, db):
    replica_a = await aiohttp_client(create_app(settings.model_copy(
        update={"reindex_workers": 1, "reindex_poll_seconds": 0.2})))
    replica_b = await aiohttp_client(create_app(settings.model_copy(update={"catalog_poll_seconds": 3600})))
    catalogs_b = replica_b.server.app[CATALOG]
    before_the_change: Catalog = catalogs_b.current
    await put(replica_a, {"resourceType": "Organization", "id": "o1", "name": "Acme"})

    await put(replica_a, ALIAS_X)
    started = await replica_a.post("/fhir/$reindex", json=parameters(("url", "valueString", "Organization?")),
                                   headers=FHIR_JSON)
    assert started.status == 202
    await poll_until_ended(replica_a, started.headers["Content-Location"])
    generation = await db.fetchval("SELECT max(generation) FROM search_parameter_change")
    assert not await db.fetchval("SELECT count(*) FROM search_parameter_change WHERE NOT indexed")

    # B one generation behind: the catalog it held before the change, as if neither NOTIFY had reached it.
    await caught_up(catalogs_b, generation)
    catalogs_b.current = before_the_change
    await put(replica_b, {"resourceType": "Organization", "id": "o1", "name": "Acme", "alias": ["Zeta"]})

    assert await search(replica_a, "Organization?alias-x=zeta") == (["o1"], [])
    assert await db.fetchval("SELECT s.index_gen FROM resource_index_state s JOIN resource USING (res_id) "
                             "WHERE fhir_id = 'o1'") == generation
    assert catalogs_b.current.generation == generation  # the write brought B's catalog up to date


async def test_a_bulk_load_with_a_lagging_catalog_indexes_with_the_current_generation(client, db):
    await put(client, ALIAS_X)
    lagging = Catalogs(Registry.builtin())  # a `load` process started before the change
    async with client.server.app[POOL].acquire() as conn:
        await write_batch(conn, [Submitted.of({"resourceType": "Organization", "id": "o2", "alias": ["Zeta"]})],
                          lagging)
    generation = await db.fetchval("SELECT max(generation) FROM search_parameter_change")
    assert await db.fetchval("SELECT s.index_gen FROM resource_index_state s JOIN resource USING (res_id) "
                             "WHERE fhir_id = 'o2'") == generation
    assert (await search(client, "Organization?alias-x=zeta"))[0] == ["o2"]
