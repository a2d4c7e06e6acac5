"""Conditional create, update and delete through the real app: the match rules, replies, privileges, and
two apps racing the same conditional create on one database."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from email.utils import format_datetime, parsedate_to_datetime

from service.app import create_app
from tests import tokens

FHIR_JSON = {"Content-Type": "application/fhir+json"}
SYSTEM = "urn:test:ids"


def org(value: str | None = None, **extra: object) -> dict[str, object]:
    identifier = [{"system": SYSTEM, "value": value}] if value else []
    return {"resourceType": "Organization", "name": f"Org {value}", "identifier": identifier, **extra}


async def post(client, body, if_none_exist=None, **headers):
    extra = {"If-None-Exist": if_none_exist} if if_none_exist is not None else {}
    return await client.post("/fhir/Organization", json=body, headers={**FHIR_JSON, **extra, **headers})


async def created(client, value, **extra):
    response = await post(client, org(value, **extra))
    assert response.status == 201, await response.text()
    return await response.json(content_type=None)


async def count(db, live_only=True):
    condition = " AND NOT deleted" if live_only else ""
    return await db.fetchval(f"SELECT count(*) FROM resource WHERE res_type = 'Organization'{condition}")


async def test_conditional_create_creates_once_then_returns_the_match(client, db):
    first = await post(client, org("a"), f"identifier={SYSTEM}|a")
    assert first.status == 201
    body = await first.json(content_type=None)
    again = await post(client, org("a", name="Other name"), f"Organization?identifier={SYSTEM}|a")
    assert again.status == 200
    assert again.headers["ETag"] == 'W/"1"'
    assert again.headers["Location"].endswith(f"/fhir/Organization/{body['id']}/_history/1")
    assert await again.json(content_type=None) == body  # the existing resource, unchanged
    assert await count(db) == 1
    assert await db.fetchval("SELECT count(*) FROM resource_version") == 1


async def test_conditional_create_with_several_matches_is_412_and_writes_nothing(client, db):
    await created(client, "dup")
    await created(client, "dup")
    response = await post(client, org("dup"), f"identifier={SYSTEM}|dup")
    assert response.status == 412
    issue = (await response.json(content_type=None))["issue"][0]
    assert issue["code"] == "multiple-matches"
    assert "matches more than one resource" in issue["diagnostics"]
    assert await count(db) == 2


async def test_conditional_create_prefer_minimal_and_outcome_on_a_match(client):
    existing = await created(client, "p")
    minimal = await post(client, org("p"), f"identifier={SYSTEM}|p", Prefer="return=minimal")
    assert minimal.status == 200 and await minimal.read() == b""
    assert minimal.headers["Location"].endswith(f"/Organization/{existing['id']}/_history/1")
    outcome = await post(client, org("p"), f"identifier={SYSTEM}|p", Prefer="return=OperationOutcome")
    issue = (await outcome.json(content_type=None))["issue"][0]
    assert issue["severity"] == "information" and existing["id"] in issue["diagnostics"]


async def test_blank_if_none_exist_is_a_plain_create(client, db):
    await created(client, "b")
    response = await post(client, org("b"), "  ")
    assert response.status == 201
    assert await count(db) == 2


async def test_conditional_criteria_are_strict_and_need_a_search_parameter(client, db):
    unknown = await post(client, org("c"), "nonsense=1", Prefer="handling=lenient")
    assert unknown.status == 400
    assert "nonsense" in (await unknown.json(content_type=None))["issue"][0]["diagnostics"]
    hint = await client.put("/fhir/Organization?name=c&_totalMethod=count", json=org("c"), headers=FHIR_JSON)
    assert hint.status == 400  # a search ignores unknown `_` names; criteria may not, it would widen the match
    assert "'_totalMethod'" in (await hint.json(content_type=None))["issue"][0]["diagnostics"]
    for criteria in ("_count=1", "", "name="):
        response = await client.put(f"/fhir/Organization?{criteria}", json=org("c"), headers=FHIR_JSON)
        assert response.status == 400, criteria
    other_type = await post(client, org("c"), f"Patient?identifier={SYSTEM}|c")
    assert other_type.status == 400
    assert (await client.delete("/fhir/Organization")).status == 400
    assert await count(db) == 0


async def test_conditional_update_creates_updates_and_refuses_ambiguity(client, db):
    url = f"/fhir/Organization?identifier={SYSTEM}|u"
    first = await client.put(url, json=org("u"), headers=FHIR_JSON)
    assert first.status == 201
    made = await first.json(content_type=None)
    assert first.headers["Location"].endswith(f"/Organization/{made['id']}/_history/1")
    second = await client.put(url, json=org("u", name="Renamed"), headers=FHIR_JSON)
    assert second.status == 200 and second.headers["ETag"] == 'W/"2"'
    assert (await second.json(content_type=None))["id"] == made["id"]
    with_id = await client.put(url, json=org("u", id=made["id"], name="Third"), headers=FHIR_JSON)
    assert with_id.status == 200 and with_id.headers["ETag"] == 'W/"3"'
    found = await client.get(f"/fhir/Organization?name=Third&identifier={SYSTEM}|u")
    assert (await found.json(content_type=None))["total"] == 1
    await created(client, "u")
    ambiguous = await client.put(url, json=org("u", name="Fourth"), headers=FHIR_JSON)
    assert ambiguous.status == 412
    assert await db.fetchval("SELECT count(*) FROM resource WHERE body::text LIKE '%Fourth%'") == 0


async def test_conditional_update_checks_the_body_id_and_if_match(client, db):
    existing = await created(client, "v")
    url = f"/fhir/Organization?identifier={SYSTEM}|v"
    wrong_id = await client.put(url, json=org("v", id="someone-else"), headers=FHIR_JSON)
    assert wrong_id.status == 400
    stale = await client.put(url, json=org("v"), headers={**FHIR_JSON, "If-Match": 'W/"7"'})
    assert stale.status == 412
    current = await client.put(url, json=org("v"), headers={**FHIR_JSON, "If-Match": 'W/"1"'})
    assert current.status == 200
    assert await db.fetchval("SELECT version FROM resource WHERE fhir_id = $1", existing["id"]) == 2


async def test_conditional_update_without_a_match_keeps_the_body_id(client):
    response = await client.put(f"/fhir/Organization?identifier={SYSTEM}|w", json=org("w", id="client-id"),
                                headers=FHIR_JSON)
    assert response.status == 201
    assert response.headers["Location"].endswith("/Organization/client-id/_history/1")
    assert (await client.get("/fhir/Organization/client-id")).status == 200


async def test_conditional_delete_one_none_and_several(client, db):
    one = await created(client, "d1")
    response = await client.delete(f"/fhir/Organization?identifier={SYSTEM}|d1")
    assert response.status == 200
    assert response.headers["ETag"] == 'W/"2"'
    assert one["id"] in (await response.json(content_type=None))["issue"][0]["diagnostics"]
    assert (await client.get(f"/fhir/Organization/{one['id']}")).status == 410
    none = await client.delete(f"/fhir/Organization?identifier={SYSTEM}|d1")
    assert none.status == 200
    issue = (await none.json(content_type=None))["issue"][0]
    assert (issue["severity"], issue["code"]) == ("warning", "not-found")
    await created(client, "d2")
    await created(client, "d2")
    several = await client.delete(f"/fhir/Organization?identifier={SYSTEM}|d2")
    assert several.status == 412
    assert await count(db) == 2


async def test_conditional_delete_of_several_when_allowed(aiohttp_client, settings, db):
    client = await aiohttp_client(create_app(settings.model_copy(update={"conditional_delete_multiple": True})))
    for _ in range(3):
        await created(client, "m")
    keep = await created(client, "keep")
    response = await client.delete(f"/fhir/Organization?identifier={SYSTEM}|m")
    assert response.status == 200
    assert "Successfully deleted 3 resource(s)" in (await response.json(content_type=None))["issue"][0]["diagnostics"]
    assert "ETag" not in response.headers
    assert await count(db) == 1
    assert (await client.get(f"/fhir/Organization/{keep['id']}")).status == 200


async def test_racing_conditional_creates_on_two_apps_make_one_resource(aiohttp_client, settings, db):
    clients = [await aiohttp_client(create_app(settings)) for _ in range(2)]
    criteria = f"identifier={SYSTEM}|race"
    responses = await asyncio.gather(*(post(clients[i % 2], org("race"), criteria) for i in range(20)))
    statuses = sorted(response.status for response in responses)
    assert statuses == [200] * 19 + [201]
    ids = {(await response.json(content_type=None))["id"] for response in responses}
    assert len(ids) == 1
    assert await count(db) == 1


async def test_racing_conditional_updates_create_one_resource_then_version_it(aiohttp_client, settings, db):
    clients = [await aiohttp_client(create_app(settings)) for _ in range(2)]
    url = f"/fhir/Organization?identifier={SYSTEM}|race-update"
    responses = await asyncio.gather(*(clients[i % 2].put(url, json=org("race-update"), headers=FHIR_JSON)
                                       for i in range(10)))
    assert sorted(response.status for response in responses) == [200] * 9 + [201]
    assert await count(db) == 1
    assert await db.fetchval("SELECT version FROM resource WHERE res_type = 'Organization'") == 10


async def test_conditional_interactions_need_search_privileges(aiohttp_client, settings, db):
    async def as_user(*roles):
        token = tokens.hs256(tokens.claims(list(roles)))
        return await aiohttp_client(create_app(settings), headers=tokens.bearer(token))

    writer = await as_user("Organization.write")
    refused = await post(writer, org("x"), f"identifier={SYSTEM}|x")
    assert refused.status == 403
    assert "Organization.search" in (await refused.json(content_type=None))["issue"][0]["diagnostics"]
    assert (await writer.put(f"/fhir/Organization?identifier={SYSTEM}|x", json=org("x"), headers=FHIR_JSON)).status \
        == 403
    assert (await writer.delete(f"/fhir/Organization?identifier={SYSTEM}|x")).status == 403
    assert (await post(writer, org("x"))).status == 201  # a plain create needs no search
    searcher = await as_user("Organization.write", "Organization.search")
    assert (await post(searcher, org("x"), f"identifier={SYSTEM}|x")).status == 200
    chained = await post(searcher, org("x"), "partof:Organization.name=x&endpoint:Endpoint.name=e")
    assert chained.status == 403
    assert "Endpoint.read" in (await chained.json(content_type=None))["issue"][0]["diagnostics"]
    assert await count(db) == 1


async def test_conditional_read_and_vread_answer_304_when_current(client):
    made = await created(client, "r")
    url = f"/fhir/Organization/{made['id']}"
    for path in (url, f"{url}/_history/1"):
        same = await client.get(path, headers={"If-None-Match": 'W/"1"'})
        assert same.status == 304 and await same.read() == b""
        assert same.headers["ETag"] == 'W/"1"'
        assert (await client.get(path, headers={"If-None-Match": '"1", W/"5"'})).status == 304
        assert (await client.get(path, headers={"If-None-Match": "*"})).status == 304
        assert (await client.get(path, headers={"If-None-Match": 'W/"2"'})).status == 200
    last_modified = parsedate_to_datetime((await client.get(url)).headers["Last-Modified"])
    later = format_datetime(last_modified + timedelta(seconds=1), usegmt=True)
    assert (await client.get(url, headers={"If-Modified-Since": later})).status == 304
    same_second = format_datetime(last_modified, usegmt=True)  # lastUpdated may be later within that second
    assert (await client.get(url, headers={"If-Modified-Since": same_second})).status == 200
    assert (await client.get(url, headers={"If-Modified-Since": "Sat, 01 Jan 2000 00:00:00 GMT"})).status == 200
    assert (await client.get(url, headers={"If-Modified-Since": "not a date"})).status == 200
    # If-None-Match decides alone when both are sent (RFC 9110).
    both = await client.get(url, headers={"If-None-Match": 'W/"9"', "If-Modified-Since": later})
    assert both.status == 200
    await client.put(url, json={**made, "name": "Changed"}, headers=FHIR_JSON)
    assert (await client.get(url, headers={"If-None-Match": 'W/"1"'})).status == 200
    assert (await client.get(f"{url}/_history/1", headers={"If-None-Match": 'W/"1"'})).status == 304
    await client.delete(url)
    assert (await client.get(url, headers={"If-None-Match": 'W/"2"'})).status == 410
