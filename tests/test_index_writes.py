"""Index rows are written in the same transaction as the resource: create, update, delete, bulk load."""

from __future__ import annotations

import orjson
import pytest

from service.search.param_hash import sp_hash
from service.search.registry import Registry
from service.store.indexes import TABLE_COLUMNS
from tests.conftest import ndjson_files, run_load
from tests.indexes import expected_index_rows, stored_index_rows

FHIR_JSON = {"Content-Type": "application/fhir+json"}


@pytest.fixture(scope="module")
def registry() -> Registry:
    return Registry.builtin()


async def names_of(db, fhir_id: str) -> list[str]:
    return sorted(row[0] for row in await db.fetch(
        "SELECT s.exact FROM idx_string s JOIN resource r USING (res_id) WHERE r.fhir_id = $1 AND s.sp_hash = $2",
        fhir_id, sp_hash("Organization", "name")))


async def test_create_update_delete_keep_indexes_exact(client, db, registry):
    org = {"resourceType": "Organization", "id": "o1", "name": "Église Saint-Éloi", "active": True,
           "identifier": [{"system": "urn:oid:1.2", "value": "42"}], "partOf": {"reference": "Organization/parent"}}
    assert (await client.put("/fhir/Organization/o1", json=org, headers=FHIR_JSON)).status == 201
    assert await names_of(db, "o1") == ["Église Saint-Éloi"]
    normalized = await db.fetchval("SELECT normalized FROM idx_string WHERE sp_hash = $1",
                                   sp_hash("Organization", "name"))
    assert normalized == "eglise saint-eloi"
    assert await stored_index_rows(db) == await expected_index_rows(db, registry)

    assert (await client.put("/fhir/Organization/o1", json={**org, "name": "Renamed"}, headers=FHIR_JSON)).status == 200
    assert await names_of(db, "o1") == ["Renamed"]
    assert await stored_index_rows(db) == await expected_index_rows(db, registry)

    assert (await client.delete("/fhir/Organization/o1")).status == 200
    stored = await stored_index_rows(db)
    assert all(not rows for rows in stored.values())


async def test_refused_write_leaves_indexes_alone(client, db, registry):
    org = {"resourceType": "Organization", "id": "o1", "name": "Kept"}
    assert (await client.put("/fhir/Organization/o1", json=org, headers=FHIR_JSON)).status == 201
    before = await stored_index_rows(db)
    refused = await client.put("/fhir/Organization/o1", json={**org, "name": "Lost"},
                               headers={**FHIR_JSON, "If-Match": 'W/"9"'})
    assert refused.status == 412
    assert await stored_index_rows(db) == before


async def test_bulk_load_writes_the_indexes_a_clean_extraction_gives(database_url, db, registry):
    result = run_load(database_url, *ndjson_files("plannet", "synthea-bulk-10"))
    assert result.returncode == 0, result.stderr
    stored = await stored_index_rows(db)
    assert sum(len(rows) for rows in stored.values()) > 100_000
    assert stored == await expected_index_rows(db, registry)


async def test_update_rewrites_only_the_rows_that_changed(client, db, registry):
    org = {"resourceType": "Organization", "id": "o1", "name": "Before",
           "identifier": [{"system": "urn:oid:1.2", "value": "42"}]}
    assert (await client.put("/fhir/Organization/o1", json=org, headers=FHIR_JSON)).status == 201
    identifier_hash = sp_hash("Organization", "identifier")
    token_rows = "SELECT ctid::text FROM idx_token WHERE sp_hash = $1 ORDER BY 1"
    before = await db.fetch(token_rows, identifier_hash)
    name_before = await db.fetchval("SELECT ctid::text FROM idx_string WHERE exact = 'Before'")
    assert (await client.put("/fhir/Organization/o1", json={**org, "name": "After"}, headers=FHIR_JSON)).status == 200
    assert await db.fetch(token_rows, identifier_hash) == before  # untouched: same physical rows
    assert await db.fetchval("SELECT count(*) FROM idx_string WHERE ctid::text = $1", name_before) == 0
    assert await names_of(db, "o1") == ["After"]
    assert await stored_index_rows(db) == await expected_index_rows(db, registry)


RESOURCES_OF_EVERY_TABLE = [  # between them, rows of every index table, changed by each update
    {"resourceType": "Location", "id": "l1", "name": "Depot", "position": {"latitude": 52.5, "longitude": 13.4},
     "managingOrganization": {"reference": "Organization/o1"}},
    {"resourceType": "Observation", "id": "b1", "status": "final", "code": {"coding": [
        {"system": "http://loinc.org", "code": "8480-6"}]}, "effectiveDateTime": "2024-03-01",
     "valueQuantity": {"value": 120.50, "unit": "mmHg", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"},
     "component": [{"code": {"coding": [{"system": "http://loinc.org", "code": "8462-4"}]},
                    "valueQuantity": {"value": 80, "unit": "mmHg"}}]},
    {"resourceType": "RiskAssessment", "id": "r1", "status": "final", "subject": {"reference": "Patient/p1"},
     "prediction": [{"probabilityDecimal": 0.25}]},
    {"resourceType": "ValueSet", "id": "v1", "status": "active", "url": "http://example.org/vs/1"},
]


def changed(resource: dict) -> dict:
    """The resource with every indexed value changed."""
    text = orjson.dumps(resource).decode()
    for old, new in [("52.5", "48.1"), ("Depot", "Store"), ("o1", "o2"), ("8480-6", "8310-5"), ("2024-03-01",
                     "2025-01-02"), ("120.50", "99.0"), ("8462-4", "8867-4"), ("0.25", "0.75"), ("p1", "p2"),
                     ("vs/1", "vs/2")]:
        text = text.replace(old, new)
    return orjson.loads(text)


async def test_updates_of_rows_in_every_table_are_written_exactly(client, db, registry):
    for resource in RESOURCES_OF_EVERY_TABLE:
        url = f"/fhir/{resource['resourceType']}/{resource['id']}"
        assert (await client.put(url, json=resource, headers=FHIR_JSON)).status == 201
        assert (await client.put(url, json=changed(resource), headers=FHIR_JSON)).status == 200
    tables = await db.fetch("SELECT DISTINCT tableoid::regclass::text FROM ("
                            + " UNION ALL ".join(f"SELECT tableoid FROM {table}" for table in TABLE_COLUMNS) + ") t")
    assert {row[0] for row in tables} == set(TABLE_COLUMNS)
    assert await stored_index_rows(db) == await expected_index_rows(db, registry)
    assert await db.fetchval("SELECT count(*) FROM idx_position WHERE latitude = 48.1") == 1
    assert await db.fetchval("SELECT count(*) FROM idx_position WHERE latitude = 52.5") == 0
