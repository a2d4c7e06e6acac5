"""Transaction Bundles (`POST [base]`) through the real app: references between entries and conditional
references rewritten, all or nothing, the processing order, conditional entries and the response."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.bundles import SYSTEM, bundle, entry, locations, org, post, row_counts, send, statuses, stored

PARENT = f"Organization?identifier={SYSTEM}|parent"


def network() -> list[dict[str, Any]]:
    """50 entries: Organizations, Locations, Practitioners and PractitionerRoles referring to each other by
    placeholder (backwards and forwards, in extensions and contained resources), and to an existing
    Organization by a conditional reference."""
    orgs = [post(org(f"Org {i}", f"o{i}", partOf={"reference": PARENT if i % 2 else f"urn:uuid:org-{i - 1}"}),
                 f"urn:uuid:org-{i}") for i in range(10)]
    orgs[0]["resource"]["partOf"] = {"reference": PARENT}
    locations_ = [post({"resourceType": "Location", "name": f"Loc {i}",
                        "managingOrganization": {"reference": f"urn:uuid:org-{i}"},
                        "partOf": {"reference": f"urn:uuid:loc-{(i + 1) % 10}"}}, f"urn:uuid:loc-{i}")
                  for i in range(10)]
    practitioners = [post({"resourceType": "Practitioner", "name": [{"family": f"Doe{i}"}]}, f"urn:oid:1.2.{i}")
                     for i in range(15)]
    roles = [post({
        "resourceType": "PractitionerRole",
        "practitioner": {"reference": f"urn:oid:1.2.{i}"},
        "organization": {"reference": f"urn:uuid:org-{i % 10}"},
        "location": [{"reference": f"urn:uuid:loc-{i % 10}"}],
        "extension": [{"url": "urn:test:ext", "valueReference": {"reference": f"urn:uuid:org-{(i + 1) % 10}"}}],
        "contained": [{"resourceType": "Organization", "id": "c", "partOf": {"reference": f"urn:uuid:org-{i % 10}"}}],
    }, f"urn:uuid:role-{i}") for i in range(15)]
    return [*orgs, *locations_, *practitioners, *roles]


async def test_fifty_entries_commit_with_every_reference_rewritten(client, db):
    parent = await send(client, bundle("transaction", [post(org("Parent", "parent"))]))
    parent_name = locations(parent)[0]
    entries = network()
    response = await send(client, bundle("transaction", entries))
    assert response["type"] == "transaction-response"
    assert statuses(response) == ["201 Created"] * 50
    names = dict(zip((item["fullUrl"] for item in entries), locations(response)))
    org0, loc3, role7 = [await stored(db, names[url])
                         for url in ("urn:uuid:org-0", "urn:uuid:loc-3", "urn:uuid:role-7")]
    assert org0["partOf"] == {"reference": parent_name}
    assert loc3["managingOrganization"] == {"reference": names["urn:uuid:org-3"]}
    assert loc3["partOf"] == {"reference": names["urn:uuid:loc-4"]}  # an entry processed after this one
    assert role7["practitioner"] == {"reference": names["urn:oid:1.2.7"]}
    assert role7["extension"][0]["valueReference"] == {"reference": names["urn:uuid:org-8"]}
    assert role7["contained"][0]["partOf"] == {"reference": names["urn:uuid:org-7"]}
    bodies = await db.fetch("SELECT body FROM resource")
    assert not [row for row in bodies if b"urn:uuid:" in row["body"] or b'"urn:oid:' in row["body"]]
    # The index rows hold the rewritten references: searches by reference find the resources.
    found = await client.get(f"/fhir/Location?organization={names['urn:uuid:org-3']}")
    assert [e["resource"]["name"] for e in (await found.json())["entry"]] == ["Loc 3"]
    children = await client.get(f"/fhir/Organization?partof={parent_name}")
    assert (await children.json())["total"] == 6  # org-0 and the five odd ones
    practitioner = names["urn:oid:1.2.7"]
    roles = await client.get(f"/fhir/PractitionerRole?practitioner={practitioner}&_include=PractitionerRole:location")
    included = [e["resource"]["resourceType"] for e in (await roles.json())["entry"]]
    assert included == ["PractitionerRole", "Location"]


async def test_one_invalid_entry_writes_nothing_and_is_named(client, db):
    await send(client, bundle("transaction", [post(org("Parent", "parent")), post(org("Doomed", "doomed"))]))
    before = await row_counts(db)
    entries = network()
    entries.append(entry("DELETE", f"Organization?identifier={SYSTEM}|doomed"))  # done first, then undone
    entries[32]["resource"]["name"] = "not a list of HumanName"  # not valid R4: refused as a single PUT is
    response = await client.post("/fhir", json=bundle("transaction", entries))
    assert response.status == 400
    diagnostics = (await response.json())["issue"][0]["diagnostics"]
    assert diagnostics.startswith("Bundle.entry[32] (urn:oid:1.2.12): ")
    assert await row_counts(db) == before
    entries[32]["resource"]["name"] = [{"family": "Fine"}]
    entries[12]["request"]["url"] = "Practitioner"  # a Location sent to the wrong type: refused before any write
    wrong_type = await client.post("/fhir", json=bundle("transaction", entries))
    assert wrong_type.status == 400
    assert "Bundle.entry[12] (urn:uuid:loc-2): The resource type 'Location' does not match" in (
        await wrong_type.json())["issue"][0]["diagnostics"]
    assert await row_counts(db) == before


async def test_conditional_references_must_match_exactly_one(client, db):
    before = await row_counts(db)
    missing = bundle("transaction", [post(org("A", "a")), post(org("B", "b", partOf={"reference": PARENT}))])
    response = await client.post("/fhir", json=missing)
    assert response.status == 404
    assert "Bundle.entry[1]: Invalid conditional reference" in (await response.json())["issue"][0]["diagnostics"]
    assert await row_counts(db) == before
    await send(client, bundle("transaction", [post(org("P1", "parent")), post(org("P2", "parent"))]))
    several = await client.post("/fhir", json=missing)
    assert several.status == 412
    assert (await several.json())["issue"][0]["code"] == "multiple-matches"


async def test_processing_order_is_delete_post_put_patch_get(client, db):
    await send(client, bundle("transaction", [post(org("Old", "dup")), post(org("Patched", "p"))]))
    patched = (await (await client.get(f"/fhir/Organization?identifier={SYSTEM}|p")).json())["entry"][0]["resource"]
    response = await send(client, bundle("transaction", [
        entry("GET", "Organization/late"),  # runs last: sees the PUT below
        entry("PATCH", f"Organization/{patched['id']}", {"resourceType": "Parameters", "parameter": [
            {"name": "operation", "part": [{"name": "type", "valueCode": "replace"},
                                          {"name": "path", "valueString": "Organization.name"},
                                          {"name": "value", "valueString": "Patched again"}]}]}),
        entry("PUT", "Organization/late", {**org("Late", "late"), "id": "late"}),
        post(org("New", "dup"), ifNoneExist=f"identifier={SYSTEM}|dup"),  # after the DELETE: no match
        entry("DELETE", f"Organization?identifier={SYSTEM}|dup"),
    ]))
    assert statuses(response) == ["200 OK", "200 OK", "201 Created", "201 Created", "204 No Content"]
    assert response["entry"][0]["resource"]["name"] == "Late"
    names = [row["name"] for row in await db.fetch(
        "SELECT convert_from(body, 'UTF8')::jsonb->>'name' AS name FROM resource WHERE NOT deleted ORDER BY name")]
    assert names == ["Late", "New", "Patched again"]


async def test_if_none_exist_matches_once_and_duplicates_resolve_to_one_resource(client, db):
    existing = locations(await send(client, bundle("transaction", [post(org("Known", "k"))])))[0]
    response = await send(client, bundle("transaction", [
        post(org("Known again", "k"), "urn:uuid:k", ifNoneExist=f"identifier={SYSTEM}|k"),
        post(org("Fresh", "f"), "urn:uuid:f1", ifNoneExist=f"Organization?identifier={SYSTEM}|f"),
        post(org("Fresh twice", "f"), "urn:uuid:f2", ifNoneExist=f"identifier={SYSTEM}|f"),
        post({"resourceType": "Location", "name": "L", "managingOrganization": {"reference": "urn:uuid:k"},
              "partOf": {"reference": "urn:uuid:x"}}, "urn:uuid:x"),
        post({"resourceType": "Endpoint", "status": "active", "address": "https://e.test",
              "connectionType": {"code": "hl7-fhir-rest"}, "payloadType": [{"text": "any"}],
              "managingOrganization": {"reference": "urn:uuid:f2"}}),
        post(org("Child", partOf={"reference": f"Organization?identifier={SYSTEM}|f"})),  # created just above
    ]))
    assert statuses(response) == ["200 OK", "201 Created", "200 OK", "201 Created", "201 Created", "201 Created"]
    names = locations(response)
    assert names[0] == existing and names[1] == names[2]
    assert "nothing was created" in response["entry"][0]["response"]["outcome"]["issue"][0]["diagnostics"]
    location, endpoint = await stored(db, names[3]), await stored(db, names[4])
    assert location["managingOrganization"] == {"reference": existing}
    assert location["partOf"] == {"reference": names[3]}  # its own fullUrl
    assert endpoint["managingOrganization"] == {"reference": names[1]}
    assert (await stored(db, names[5]))["partOf"] == {"reference": names[1]}
    assert await db.fetchval("SELECT count(*) FROM resource WHERE res_type = 'Organization'") == 3
    assert (await stored(db, existing))["name"] == "Known"


async def test_a_created_entry_with_a_url_as_full_url_is_referred_to_by_that_url(client, db):
    response = await send(client, bundle("transaction", [
        post(org("Temp"), "http://example.org/fhir/Organization/temp"),
        post({"resourceType": "Location", "managingOrganization": {"reference": "Organization/temp"},
              "partOf": {"reference": "urn:uuid:self"}}, "urn:uuid:self"),
        post({"resourceType": "Location", "managingOrganization": {"reference": "http://example.org/fhir/Organization/temp"}}),
    ]))
    organization, *places = locations(response)
    assert organization != "Organization/temp"  # a POST gets an id of the server's
    for place in places:
        assert (await stored(db, place))["managingOrganization"] == {"reference": organization}


async def test_a_plain_create_beside_a_conditional_one_is_a_duplicate(client, db):
    response = await client.post("/fhir", json=bundle("transaction", [
        post(org("One", "same")), post(org("Two", "same"), ifNoneExist=f"identifier={SYSTEM}|same")]))
    assert response.status == 400
    assert "would make several Organization resources match" in (await response.json())["issue"][0]["diagnostics"]
    assert await db.fetchval("SELECT count(*) FROM resource") == 0


async def test_response_follows_prefer_and_carries_version_headers(client):
    sent = bundle("transaction", [post(org("A", "a"))])
    default = (await send(client, sent))["entry"][0]
    assert "resource" not in default
    response = default["response"]
    name = response["location"].split("/_history/")[0]
    assert response["location"] == f"{name}/_history/1" and response["etag"] == "1"
    assert response["lastModified"].endswith("+00:00")
    assert response["outcome"]["issue"][0]["diagnostics"] == f"Created {name} at version 1"
    full = (await send(client, sent, Prefer="return=representation"))["entry"][0]
    assert full["resource"]["resourceType"] == "Organization" and full["resource"]["meta"]["versionId"] == "1"
    minimal = (await send(client, sent, Prefer="return=minimal"))["entry"][0]
    assert set(minimal) == {"response"} and "outcome" not in minimal["response"]


async def test_get_entries_read_vread_search_and_answer_conditionally(client):
    name = locations(await send(client, bundle("transaction", [post(org("A", "a"))])))[0]
    response = await send(client, bundle("transaction", [
        entry("GET", name), entry("GET", f"{name}/_history/1"), entry("GET", f"Organization?identifier={SYSTEM}|a"),
        entry("GET", name, ifNoneMatch='W/"2"'), entry("GET", "Organization/unknown"),
        entry("PUT", name, {**org("B", "a"), "id": name.split("/")[1]}),
    ]))
    assert statuses(response) == ["200 OK", "200 OK", "200 OK", "304 Not Modified", "404 Not Found", "200 OK"]
    read, vread, search = (item["resource"] for item in response["entry"][:3])
    assert read["name"] == "B" and vread["name"] == "A"  # the read runs after the update
    assert search["type"] == "searchset" and search["total"] == 1
    assert response["entry"][3]["response"]["etag"] == "2" and "resource" not in response["entry"][3]
    assert "Bundle.entry[4]" in response["entry"][4]["response"]["outcome"]["issue"][0]["diagnostics"]


async def test_patch_delete_and_if_match_in_a_transaction(client, db):
    first, second = locations(await send(client, bundle("transaction", [post(org("A", "a")), post(org("B", "b"))])))
    json_patch = {"resourceType": "Binary", "contentType": "application/json-patch+json",
                  "data": "W3sib3AiOiJyZXBsYWNlIiwicGF0aCI6Ii9uYW1lIiwidmFsdWUiOiJKU09OIn1d"}  # replace /name by JSON
    conflict = await client.post("/fhir", json=bundle("transaction", [
        entry("PATCH", first, json_patch), entry("DELETE", second, ifMatch='W/"7"')]))
    assert conflict.status == 412
    assert "Bundle.entry[1]" in (await conflict.json())["issue"][0]["diagnostics"]
    response = await send(client, bundle("transaction", [
        entry("PATCH", first, json_patch, ifMatch='W/"1"'), entry("DELETE", second, ifMatch='W/"1"'),
        entry("DELETE", "Organization/never")]))
    assert statuses(response) == ["200 OK", "204 No Content", "204 No Content"]  # deleting nothing: done, as HAPI
    assert response["entry"][2]["response"]["outcome"]["issue"][0]["code"] == "not-found"
    assert response["entry"][1]["response"]["location"] == f"{second}/_history/2"
    assert (await stored(db, first))["name"] == "JSON"
    assert await db.fetchval("SELECT deleted FROM resource WHERE fhir_id = $1", second.split("/")[1])


async def test_refusals_before_anything_is_written(client, db):
    overlap = await client.post("/fhir", json=bundle("transaction", [
        entry("PUT", "Organization/x", {**org("A"), "id": "x"}),
        entry("PUT", "Organization/x", {**org("B"), "id": "x"})]))
    assert overlap.status == 400
    assert "Organization/x is also changed by Bundle.entry[0]" in (await overlap.json())["issue"][0]["diagnostics"]
    dangling = await client.post("/fhir", json=bundle("transaction", [
        post({"resourceType": "Location", "managingOrganization": {"reference": "urn:uuid:nowhere"}})]))
    assert dangling.status == 400
    assert "names no entry of this Bundle" in (await dangling.json())["issue"][0]["diagnostics"]
    twice = [post(org("A"), "urn:uuid:a"), post(org("B"), "urn:uuid:a")]
    shared = await client.post("/fhir", json=bundle("transaction", twice))
    assert shared.status == 400
    assert "Bundle.entry[0] (urn:uuid:a) has the same fullUrl" in (await shared.json())["issue"][0]["diagnostics"]
    for body in ({"resourceType": "Organization"}, bundle("collection", []), bundle("transaction", [{"fullUrl": "x"}])):
        response = await client.post("/fhir", json=body)
        assert response.status == 400, body
    assert await db.fetchval("SELECT count(*) FROM resource") == 0


async def test_put_entries_create_update_and_revive_with_the_url_id(client, db):
    response = await send(client, bundle("transaction", [entry("PUT", "Organization/from-url", org("No id"))]))
    assert statuses(response) == ["201 Created"] and locations(response) == ["Organization/from-url"]
    assert (await stored(db, "Organization/from-url"))["id"] == "from-url"
    other = await client.post("/fhir", json=bundle("transaction", [
        entry("PUT", "Organization/from-url", {**org("Other id"), "id": "other"})]))
    assert other.status == 400
    assert "does not match the id 'from-url'" in (await other.json())["issue"][0]["diagnostics"]
    await send(client, bundle("transaction", [entry("DELETE", "Organization/from-url")]))
    response = await send(client, bundle("transaction", [
        entry("PUT", "Organization/from-url", org("Revived", "r")),  # a deleted resource comes back: 201
        entry("PUT", "Organization/again", org("Second", "s")),
    ]))
    assert statuses(response) == ["201 Created", "201 Created"]
    assert response["entry"][0]["response"]["etag"] == "3"
    updated = await send(client, bundle("transaction", [entry("PUT", "Organization/again", org("Renamed", "t"))]))
    assert statuses(updated) == ["200 OK"] and updated["entry"][0]["response"]["etag"] == "2"

    async def named(value):
        found = await client.get(f"/fhir/Organization?identifier={SYSTEM}|{value}")
        return [item["resource"]["name"] for item in (await found.json()).get("entry", [])]
    assert (await named("r"), await named("s"), await named("t")) == (["Revived"], [], ["Renamed"])
    versions = await db.fetch("SELECT version, method FROM resource_version WHERE fhir_id = 'again' ORDER BY version")
    assert [tuple(row) for row in versions] == [(1, "PUT"), (2, "PUT")]


async def test_racing_transactions_with_one_conditional_create_make_one_resource(client, db):
    location = {"resourceType": "Location", "managingOrganization": {"reference": "urn:uuid:r"}}
    racing = bundle("transaction", [post(org("Raced", "race"), "urn:uuid:r", ifNoneExist=f"identifier={SYSTEM}|race"),
                                    post(location)])
    responses = await asyncio.gather(*(send(client, racing) for _ in range(6)))
    assert sorted(statuses(response)[0] for response in responses) == ["200 OK"] * 5 + ["201 Created"]
    assert len({locations(response)[0] for response in responses}) == 1
    assert await db.fetchval("SELECT count(*) FROM resource WHERE res_type = 'Organization'") == 1
    assert await db.fetchval("SELECT count(*) FROM resource WHERE res_type = 'Location'") == 6


async def test_a_search_parameter_written_in_a_bundle_is_in_force_when_it_returns(client, db):
    nickname = {"resourceType": "SearchParameter", "url": "http://example.org/sp/nickname", "name": "nickname",
                "status": "active", "code": "nickname", "base": ["Organization"], "type": "string",
                "description": "An organization's other names", "expression": "Organization.alias"}
    response = await send(client, bundle("transaction", [post(nickname), post(org("Before", alias=["Bee"]))]))
    assert statuses(response) == ["201 Created", "201 Created"]
    assert await db.fetchval("SELECT count(*) FROM search_parameter_change") == 1
    await send(client, bundle("batch", [post(org("After", alias=["Ace"]))]))
    found = await (await client.get("/fhir/Organization?nickname=ace")).json()
    assert [item["resource"]["name"] for item in found["entry"] if item["search"]["mode"] == "match"] == ["After"]


async def test_numbers_are_kept_as_written(client, db):
    raw = (b'{"resourceType":"Bundle","type":"transaction","entry":[{"request":{"method":"POST","url":"Observation"},'
           b'"resource":{"resourceType":"Observation","status":"final","code":{"text":"x"},'
           b'"valueQuantity":{"value":1.50}}}]}')
    response = await client.post("/fhir", data=raw, headers={"Content-Type": "application/fhir+json"})
    assert response.status == 200
    body = await db.fetchval("SELECT body FROM resource WHERE res_type = 'Observation'")
    assert b'"value":1.50' in body


async def test_capability_statement_lists_batch_and_transaction(client):
    statement = await (await client.get("/fhir/metadata")).json()
    codes = [interaction["code"] for interaction in statement["rest"][0]["interaction"]]
    assert {"transaction", "batch"} <= set(codes)
