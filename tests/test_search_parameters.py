"""Custom SearchParameters: validated, logged with the resource write, in force on every replica,
and pending until a reindex has indexed the resources stored before them."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from service.app import create_app
from service.http.keys import CATALOG
from service.search.param_hash import sp_hash
from service.search.registry import Registry
from tests.conftest import DATA_DIR

FHIR_JSON = {"Content-Type": "application/fhir+json"}
PLANNET_SEARCH_PARAMETERS = [
    entry["resource"] for entry in
    orjson.loads((DATA_DIR / "plannet" / "plannet-searchparameters.bundle.json").read_bytes())["entry"]
]
NETWORK_URL = "http://hl7.org/fhir/us/davinci-pdex-plan-net/StructureDefinition/network-reference"


def search_parameter(**fields) -> dict:
    return {"resourceType": "SearchParameter", "id": "sp-1", "url": "http://example.org/sp/nickname",
            "name": "nickname", "status": "active", "description": "An organization's aliases",
            "code": "nickname", "base": ["Organization"], "type": "string", "expression": "Organization.alias",
            **fields}


async def put(client, resource: dict, expected: int = 201):
    response = await client.put(f"/fhir/{resource['resourceType']}/{resource['id']}", json=resource, headers=FHIR_JSON)
    assert response.status == expected, await response.text()
    return response


async def indexed_values(db, res_type: str, code: str, table: str, column: str) -> set:
    rows = await db.fetch(f"SELECT {column} FROM {table} WHERE sp_hash = $1", sp_hash(res_type, code))
    return {row[0] for row in rows}


@pytest.mark.parametrize(("fields", "problem"), [
    ({"expression": None}, "has no expression"),
    ({"base": ["Organisation"]}, "unknown resource types"),
    ({"expression": "Organization.alias.where("}, "expression"),
    ({"expression": "Organization.nickname"}, "Organization.nickname"),
    ({"type": "text"}, "not an R4 search parameter type"),
], ids=["no expression", "unknown base", "syntax error", "unknown element", "unknown type"])
async def test_invalid_search_parameter_is_422_and_not_stored(client, db, fields, problem):
    resource = {key: value for key, value in search_parameter(**fields).items() if value is not None}
    response = await client.put("/fhir/SearchParameter/sp-1", json=resource, headers=FHIR_JSON)
    assert response.status == 422
    outcome = await response.json(content_type=None)
    assert outcome["issue"][0]["code"] == "invalid"
    assert problem in outcome["issue"][0]["diagnostics"]
    assert await db.fetchval("SELECT count(*) FROM resource") == 0
    assert await db.fetchval("SELECT count(*) FROM search_parameter_change") == 0


async def test_plannet_parameters_index_resources_written_after_them(client, db):
    for resource in PLANNET_SEARCH_PARAMETERS:
        await put(client, resource)
    catalog = client.server.app[CATALOG]
    assert catalog.registry.parameter("PractitionerRole", "network") is not None
    assert "network" in catalog.pending_codes("PractitionerRole")
    assert "name" in catalog.pending_codes("Organization")

    role = {"resourceType": "PractitionerRole", "id": "role-1",
            "extension": [{"url": NETWORK_URL, "valueReference": {"reference": "Organization/net-1"}}]}
    await put(client, role)
    await put(client, {"resourceType": "PractitionerRole", "id": "role-2"})
    assert await indexed_values(db, "PractitionerRole", "network", "idx_reference", "target_id") == {"net-1"}
    found = await (await client.get("/fhir/PractitionerRole?network=Organization/net-1")).json(content_type=None)
    matches = [e["resource"]["id"] for e in found["entry"] if e["search"]["mode"] == "match"]
    warnings = [e["resource"] for e in found["entry"] if e["search"]["mode"] == "outcome"]
    assert matches == ["role-1"]
    assert warnings and warnings[0]["issue"][0]["severity"] == "warning"
    assert "PractitionerRole:network" in warnings[0]["issue"][0]["diagnostics"]
    # Plan-Net's InsurancePlan `name` is `name | alias` without the type prefix: custom expressions compile too.
    await put(client, {"resourceType": "InsurancePlan", "id": "plan-1", "name": "Gold", "alias": ["Au Plan"]})
    assert await indexed_values(db, "InsurancePlan", "name", "idx_string", "exact") == {"Gold", "Au Plan"}


async def test_a_change_reaches_another_replica(aiohttp_client, settings, db):
    first = await aiohttp_client(create_app(settings))
    second = await aiohttp_client(create_app(settings))
    await put(first, search_parameter())
    for _ in range(100):  # NOTIFY reaches the other replica within milliseconds
        if second.server.app[CATALOG].registry.parameter("Organization", "nickname") is not None:
            break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError("the second replica never saw the new SearchParameter")
    await put(second, {"resourceType": "Organization", "id": "org-1", "alias": ["Speedy"]})
    assert await indexed_values(db, "Organization", "nickname", "idx_string", "exact") == {"Speedy"}

    assert (await first.delete("/fhir/SearchParameter/sp-1")).status == 200
    for _ in range(100):
        if second.server.app[CATALOG].registry.parameter("Organization", "nickname") is None:
            break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError("the second replica kept the deleted SearchParameter")
    # Its rows stay until a reindex, so the code stays pending.
    assert "nickname" in second.server.app[CATALOG].pending_codes("Organization")


async def test_changing_the_code_leaves_both_codes_pending_and_retired_is_not_used(client, db):
    await put(client, search_parameter())
    await put(client, search_parameter(code="moniker"), expected=200)
    catalog = client.server.app[CATALOG]
    assert catalog.registry.parameter("Organization", "moniker") is not None
    assert catalog.registry.parameter("Organization", "nickname") is None
    assert {"nickname", "moniker"} <= catalog.pending_codes("Organization")

    await put(client, search_parameter(code="moniker", status="retired"), expected=200)
    assert client.server.app[CATALOG].registry.parameter("Organization", "moniker") is None
    changes = await db.fetch("SELECT code, definition IS NULL AS gone FROM search_parameter_change ORDER BY generation")
    assert [(row["code"], row["gone"]) for row in changes] == [
        ("nickname", False), ("nickname", True), ("moniker", False), ("moniker", True)]


async def test_builtin_parameter_restored_when_its_override_is_deleted(client):
    builtin = Registry.builtin().parameter("Organization", "name").definition
    await put(client, search_parameter(code="name", expression="Organization.alias"))
    assert client.server.app[CATALOG].registry.parameter("Organization", "name").definition.expression == \
        "Organization.alias"
    assert (await client.delete("/fhir/SearchParameter/sp-1")).status == 200
    assert client.server.app[CATALOG].registry.parameter("Organization", "name").definition == builtin
    assert "name" in client.server.app[CATALOG].pending_codes("Organization")


async def test_writes_record_the_catalog_generation_they_were_indexed_with(client, db):
    await put(client, {"resourceType": "Organization", "id": "before"})
    await put(client, search_parameter())
    generation = client.server.app[CATALOG].current.generation
    assert generation > 0
    await put(client, {"resourceType": "Organization", "id": "after"})
    rows = {row["fhir_id"]: row["index_gen"] for row in await db.fetch(
        "SELECT fhir_id, s.index_gen FROM resource r JOIN resource_index_state s USING (res_id) "
        "WHERE r.res_type = 'Organization'")}
    assert rows == {"before": 0, "after": generation}
