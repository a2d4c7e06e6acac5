"""`python -m service fulltext off|on|status`: full-text search switched for the whole database. Off, writes
skip the full-text index and `_text`/`_content` are refused; on again, what was written meanwhile is found."""

from __future__ import annotations

from service.app import create_app
from service.http.keys import POOL
from service.store.fulltext import switch_off
from tests.conftest import run_service
from tests.test_errors import assert_outcome, store_counts

FHIR_JSON = {"Content-Type": "application/fhir+json"}
NARRATIVE = {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">Harbour clinic</div>'}


def organization(fhir_id: str, name: str) -> dict:
    return {"resourceType": "Organization", "id": fhir_id, "name": name, "text": NARRATIVE}


async def write(client, fhir_id: str, name: str) -> None:
    response = await client.put(f"/fhir/Organization/{fhir_id}", json=organization(fhir_id, name), headers=FHIR_JSON)
    assert response.status in (200, 201), await response.text()


async def found(client, query: str) -> set[str]:
    response = await client.get(f"/fhir/Organization?{query}")
    assert response.status == 200, await response.text()
    return {entry["resource"]["id"] for entry in (await response.json()).get("entry", [])}


def switch(database_url: str, action: str) -> str:
    result = run_service(database_url, "fulltext", action)
    assert result.returncode == 0, result.stderr
    return result.stdout


# Every way a request reaches the full-text index: each is refused while it is off or being built.
SEARCHES = ["_content=lighthouse", "_text=harbour", "name=x&_content=a,b", "_has:Endpoint:organization:_content=x",
            "partof:Organization._text=harbour"]


async def test_off_skips_the_index_and_refuses_text_searches_until_on_finds_what_was_written(
        client, db, database_url):
    await write(client, "before", "Lighthouse before")
    assert await found(client, "_content=lighthouse") == {"before"}

    assert "Full-text search is off" in switch(database_url, "off")
    assert await db.fetchval("SELECT count(*) FROM resource_text") == 0
    await write(client, "during", "Lighthouse during")
    await write(client, "before", "Lighthouse renamed")
    assert await db.fetchval("SELECT count(*) FROM resource_text") == 0  # nothing is indexed while off
    for query in SEARCHES[:2]:
        body = await assert_outcome(await client.get(f"/fhir/Organization?{query}"), 400, "not-supported")
        assert "Full-text search is switched off" in body["issue"][0]["diagnostics"]
    assert await found(client, "name=lighthouse") == {"before", "during"}  # other searches go on

    output = switch(database_url, "on")
    assert "Indexed 2 resources for full text." in output and "Full-text search is on" in output
    assert await found(client, "_content=lighthouse") == {"before", "during"}
    assert await found(client, "_content=renamed") == {"before"}
    assert await found(client, "_text=harbour") == {"before", "during"}
    await write(client, "after", "Lighthouse after")  # the triggers index writes again
    assert await found(client, "_content=lighthouse") == {"before", "during", "after"}
    assert "Indexed 0 resources" in switch(database_url, "on")  # already on: nothing to do


async def test_a_switch_stopped_part_way_refuses_until_on_is_run_again(client, db, database_url):
    await write(client, "org", "Lighthouse")
    await switch_off(client.app[POOL])
    # What a `fulltext on` that crashed after enabling the triggers leaves behind.
    await db.execute("ALTER TABLE resource ENABLE TRIGGER resource_text_insert, ENABLE TRIGGER resource_text_update")
    await db.execute("UPDATE fulltext_search SET state = 'building'")
    assert "being switched on" in switch(database_url, "status")
    for query in SEARCHES:
        body = await assert_outcome(await client.get(f"/fhir/Organization?{query}"), 400, "not-supported")
        assert "is being switched on and is not ready yet" in body["issue"][0]["diagnostics"], query
    switch(database_url, "on")
    for query in SEARCHES:
        assert (await client.get(f"/fhir/Organization?{query}")).status == 200, query
    assert await found(client, "_content=lighthouse") == {"org"}


async def test_conditional_writes_on_text_criteria_are_refused_while_off(client, db):
    await switch_off(client.app[POOL])
    before = await store_counts(db)
    for method, path in (("POST", "/fhir/Organization"), ("PUT", "/fhir/Organization?_content=lighthouse")):
        headers = {**FHIR_JSON, "If-None-Exist": "_content=lighthouse"} if method == "POST" else FHIR_JSON
        response = await client.request(method, path, json={"resourceType": "Organization", "name": "Lighthouse"},
                                        headers=headers)
        await assert_outcome(response, 400, "not-supported")
    assert await store_counts(db) == before


async def listed_codes(client) -> tuple[set[str], set[str]]:
    """The search parameters the CapabilityStatement lists for Organization, and for a system-level search."""
    rest = (await (await client.get("/fhir/metadata")).json())["rest"][0]
    organization = next(entry for entry in rest["resource"] if entry["type"] == "Organization")
    return {p["name"] for p in organization["searchParam"]}, {p["name"] for p in rest["searchParam"]}


async def test_every_replica_sees_the_switch_and_lists_text_parameters_only_while_on(
        aiohttp_client, settings, database_url):
    """The state is the database's: a second app (another replica) refuses as soon as the switch is made."""
    first = await aiohttp_client(create_app(settings))
    second = await aiohttp_client(create_app(settings))
    assert (await first.get("/fhir/Organization?_content=x")).status == 200
    assert {"_text", "_content"} <= (await listed_codes(second))[0]  # (not all types have them: not system-level)
    switch(database_url, "off")
    for replica in (first, second):
        await assert_outcome(await replica.get("/fhir/Organization?_content=x"), 400, "not-supported")
        for codes in await listed_codes(replica):
            assert not codes & {"_text", "_content"} and "_id" in codes
