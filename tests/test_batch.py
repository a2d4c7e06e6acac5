"""Batch Bundles through the real app, and what both kinds of Bundle share: privileges per entry, the entry
limit and the checks of the Bundle itself."""

from __future__ import annotations

from service.app import create_app
from tests import tokens
from tests.bundles import SYSTEM, bundle, entry, locations, org, post, row_counts, send, statuses


async def test_a_failing_entry_keeps_its_error_and_the_others_commit(client, db):
    await send(client, bundle("batch", [post(org("Twin", "twin")), post(org("Twin", "twin"))]))
    response = await send(client, bundle("batch", [
        post(org("A", "a")),
        post({"resourceType": "Practitioner", "name": "not a list"}, "urn:uuid:bad"),
        post(org("B", "b"), ifNoneExist=f"identifier={SYSTEM}|twin"),
        entry("PUT", "Organization/x", {**org("X"), "id": "x"}),
        entry("GET", "Organization/x"),
        post(org("C", "c")),
        entry("DELETE", "Organization/unknown"),
    ]))
    assert response["type"] == "batch-response"
    assert statuses(response) == ["201 Created", "400 Bad Request", "412 Precondition Failed", "201 Created",
                                  "200 OK", "201 Created", "204 No Content"]  # deleting nothing is done, as HAPI
    bad = response["entry"][1]["response"]["outcome"]["issue"][0]
    assert bad["diagnostics"].startswith("Bundle.entry[1] (urn:uuid:bad): Practitioner.name: Element 'name' repeats")
    assert response["entry"][2]["response"]["outcome"]["issue"][0]["code"] == "multiple-matches"
    assert response["entry"][4]["resource"]["name"] == "X"  # GET entries run after the writes
    names = {row["name"] for row in await db.fetch(
        "SELECT convert_from(body, 'UTF8')::jsonb->>'name' AS name FROM resource")}
    assert names == {"Twin", "A", "X", "C"}


async def test_plain_creates_and_updates_are_written_together_with_their_index_rows(client, db):
    response = await send(client, bundle("batch", [post(org(f"Org {i}", f"v{i}")) for i in range(20)]))
    assert statuses(response) == ["201 Created"] * 20
    assert len(set(locations(response))) == 20
    assert await db.fetchval("SELECT count(*) FROM resource_version WHERE method = 'POST'") == 20
    found = await client.get(f"/fhir/Organization?identifier={SYSTEM}|v7")
    assert [e["resource"]["name"] for e in (await found.json())["entry"]] == ["Org 7"]
    updates = [entry("PUT", name, org("Renamed", f"w{i}")) for i, name in enumerate(locations(response)[:3])]
    again = await send(client, bundle("batch", [*updates, entry("PUT", locations(response)[0], org("Twice"))]))
    assert statuses(again) == ["200 OK"] * 4  # two PUTs of one resource: written one after the other
    assert [item["response"]["etag"] for item in again["entry"]] == ["2", "2", "2", "3"]
    renamed = await client.get(f"/fhir/Organization?identifier={SYSTEM}|w1")
    assert [e["resource"]["name"] for e in (await renamed.json())["entry"]] == ["Renamed"]


async def test_batch_entries_cannot_refer_to_each_other(client, db):
    response = await send(client, bundle("batch", [
        post(org("A"), "urn:uuid:a"),
        post({"resourceType": "Location", "managingOrganization": {"reference": "urn:uuid:a"}}),
    ]))
    assert statuses(response) == ["201 Created", "400 Bad Request"]
    assert "the entries of a batch are independent" in (
        response["entry"][1]["response"]["outcome"]["issue"][0]["diagnostics"])


async def test_privileges_are_checked_per_entry(aiohttp_client, settings, db):
    token = tokens.hs256(tokens.claims(["Organization.create", "Organization.read"]))
    client = await aiohttp_client(create_app(settings), headers=tokens.bearer(token))
    mixed = [post(org("A", "a")), post({"resourceType": "Location", "name": "L"}, "urn:uuid:loc")]
    refused = await client.post("/fhir", json=bundle("transaction", mixed))
    assert refused.status == 403
    issue = (await refused.json())["issue"][0]
    assert issue["code"] == "forbidden"
    assert issue["diagnostics"] == ("Bundle.entry[1] (urn:uuid:loc): The privilege Location.create is required for "
                                    "this request")
    assert await db.fetchval("SELECT count(*) FROM resource") == 0
    reads = [entry("GET", "Location/1"), entry("GET", "Organization?name=A")]
    batch = await send(client, bundle("batch", [*mixed, *reads]))
    assert statuses(batch) == ["201 Created", "403 Forbidden", "403 Forbidden", "403 Forbidden"]
    assert await db.fetchval("SELECT count(*) FROM resource") == 1
    # ifNoneExist and a conditional reference search: they need Organization.search too.
    for item in (post(org("B", "b"), ifNoneExist=f"identifier={SYSTEM}|b"),
                 post(org("C", "c", partOf={"reference": f"Organization?identifier={SYSTEM}|a"}))):
        response = await client.post("/fhir", json=bundle("transaction", [item]))
        assert response.status == 403
        assert "Organization.search" in (await response.json())["issue"][0]["diagnostics"]


async def test_entry_limit_and_bundle_checks(aiohttp_client, settings, db):
    client = await aiohttp_client(create_app(settings.model_copy(update={"max_bundle_entries": 3})))
    too_many = await client.post("/fhir", json=bundle("batch", [post(org(str(i))) for i in range(4)]))
    assert too_many.status == 413
    assert "FHIR_MAX_BUNDLE_ENTRIES" in (await too_many.json())["issue"][0]["diagnostics"]
    before = await row_counts(db)
    malformed = await send(client, bundle("batch", [
        {"request": {"method": "POST"}}, entry("FETCH", "Organization"), entry("PUT", "Organization"),
    ]))
    assert statuses(malformed) == ["400 Bad Request"] * 3
    assert await row_counts(db) == before
    unauthenticated = await client.post("/fhir", json=bundle("batch", []), headers={"Authorization": ""})
    assert unauthenticated.status == 401
    empty = await send(client, bundle("batch", []))
    assert empty["type"] == "batch-response" and "entry" not in empty
    slash = await client.post("/fhir/", json=bundle("transaction", []))
    assert slash.status == 200 and (await slash.json())["type"] == "transaction-response"
