"""`$reindex verify=true` (and `reindex --verify`): every resource's stored index rows compared with a fresh
extraction; what differs is reported per resource type and parameter, and nothing is written."""

from __future__ import annotations

import pytest

from service.app import create_app
from service.search.param_hash import sp_hash
from service.search.registry import Registry
from tests.conftest import run_load
from tests.indexes import expected_index_rows, stored_index_rows
from tests.test_reindex_cli import run_reindex
from tests.test_reindex_http import local, parameters, poll_until_ended
from tests.test_reindex_modes import ORGANIZATIONS_AND_ENDPOINTS, ROW_ADDRESSES

FHIR_JSON = {"Content-Type": "application/fhir+json"}
RESOURCE_STATE = ("SELECT r.res_id, r.xmin::text, r.version, s.xmin::text AS state_xmin, s.index_gen, s.index_hash, "
                  "s.index_extractor FROM resource r LEFT JOIN resource_index_state s USING (res_id) ORDER BY 1")


async def damage(db) -> dict[str, str]:
    """One row deleted, one value changed, one stray row added; returns the resources concerned."""
    first, second = await db.fetch("SELECT res_id, fhir_id FROM resource WHERE res_type = 'Organization' "
                                   "ORDER BY res_id LIMIT 2")
    endpoint = await db.fetchrow("SELECT res_id, fhir_id FROM resource WHERE res_type = 'Endpoint' ORDER BY res_id "
                                 "LIMIT 1")
    name, status = sp_hash("Organization", "name"), sp_hash("Endpoint", "status")
    assert await db.execute("DELETE FROM idx_string WHERE ctid = (SELECT ctid FROM idx_string WHERE res_id = $1 "
                            "AND sp_hash = $2 LIMIT 1)", first["res_id"], name) == "DELETE 1"
    assert await db.execute("UPDATE idx_token SET value = 'retired' WHERE res_id = $1 AND sp_hash = $2",
                            endpoint["res_id"], status) == "UPDATE 1"
    await db.execute("INSERT INTO idx_string (res_id, sp_hash, normalized, exact) VALUES ($1, $2, 'stray', 'Stray')",
                     second["res_id"], name)
    return {"deleted": first["fhir_id"], "stray": second["fhir_id"], "changed": endpoint["fhir_id"]}


@ORGANIZATIONS_AND_ENDPOINTS
async def test_verify_reports_damaged_rows_per_parameter_and_writes_nothing(aiohttp_client, settings, db):
    client = await aiohttp_client(create_app(settings.model_copy(
        update={"reindex_workers": 1, "reindex_poll_seconds": 0.2})))
    damaged = await damage(db)
    rows, addresses, resources = await stored_index_rows(db), await db.fetch(ROW_ADDRESSES), await db.fetch(
        RESOURCE_STATE)

    started = await client.post("/fhir/$reindex", json=parameters(("verify", "valueBoolean", True)),
                                headers=FHIR_JSON)
    assert started.status == 202, await started.text()
    ended = await poll_until_ended(client, started.headers["Content-Location"])
    bundle = await ended.json(content_type=None)
    outcome = bundle["entry"][0]["response"]["outcome"]
    assert bundle["entry"][0]["response"]["status"] == "200 OK"
    report = outcome["issue"][0]["diagnostics"]
    expected = [
        "Endpoint: 1 resources differ",
        "    status: 1 resources",
        f"        Endpoint/{damaged['changed']}: 1 missing, 1 stray",
        "Organization: 2 resources differ",
        "    name: 2 resources",
        f"        Organization/{damaged['deleted']}: 1 missing, 0 stray",
        f"        Organization/{damaged['stray']}: 0 missing, 1 stray",
    ]
    lines = report.splitlines()
    start = lines.index(expected[0])
    assert lines[start:start + len(expected)] == expected
    assert "Total Resources Changed   : 0 " in report
    status_url = local(started.headers["Content-Location"])
    assert await (await client.get(f"{status_url}&_return=report")).text() == report

    assert await stored_index_rows(db) == rows
    assert await db.fetch(ROW_ADDRESSES) == addresses  # not even rewritten in place
    assert await db.fetch(RESOURCE_STATE) == resources


async def test_reindex_verify_from_the_shell_exits_1_on_differences(database_url, db, tmp_path):
    source = tmp_path / "orgs.ndjson"
    source.write_text("\n".join(f'{{"resourceType":"Organization","id":"o{n}","name":"Org {n}"}}' for n in range(5)))
    assert run_load(database_url, str(source)).returncode == 0
    clean = run_reindex(database_url, "--verify", "--wait")
    assert clean.returncode == 0, clean.stderr
    assert "Verified: the index rows of every resource checked are those of a fresh extraction." in clean.stdout

    name = sp_hash("Organization", "name")
    await db.execute("DELETE FROM idx_string WHERE sp_hash = $1 AND exact = 'Org 3'", name)
    damaged = run_reindex(database_url, "--verify", "--wait")
    assert damaged.returncode == 1, damaged.stderr
    assert "        Organization/o3: 1 missing, 0 stray" in damaged.stdout
    assert not await db.fetchval("SELECT count(*) FROM idx_string WHERE sp_hash = $1 AND exact = 'Org 3'", name)


@pytest.mark.parametrize("other", [("force", "valueBoolean", True), ("optimizeStorage", "valueCode", "ALL_VERSIONS"),
                                   ("reindexSearchParameters", "valueCode", "NONE")])
async def test_verify_takes_no_option_that_writes(client, db, other):
    response = await client.post("/fhir/$reindex", json=parameters(("verify", "valueBoolean", True), other),
                                 headers=FHIR_JSON)
    assert response.status == 400
    assert "verify=true" in (await response.json(content_type=None))["issue"][0]["diagnostics"]
    assert await db.fetchval("SELECT count(*) FROM job") == 0


@ORGANIZATIONS_AND_ENDPOINTS
async def test_force_repairs_what_verify_reports_and_only_that(aiohttp_client, settings, db):
    client = await aiohttp_client(create_app(settings.model_copy(
        update={"reindex_workers": 1, "reindex_poll_seconds": 0.2})))
    damaged = await damage(db)
    fingerprints = await db.fetch("SELECT res_id, index_hash FROM resource_index_state ORDER BY res_id")
    repaired = {row["res_id"] for row in await db.fetch("SELECT res_id FROM resource WHERE fhir_id = ANY($1)",
                                                        list(damaged.values()))}
    untouched = {row for row in await db.fetch(ROW_ADDRESSES) if row["res_id"] not in repaired}
    started = await client.post("/fhir/$reindex", json=parameters(("force", "valueBoolean", True)), headers=FHIR_JSON)
    await poll_until_ended(client, started.headers["Content-Location"])
    job_id = await db.fetchval("SELECT id FROM job")
    assert await db.fetchval("SELECT sum(changed) FROM job_chunk WHERE job_id = $1", job_id) == 3
    assert await stored_index_rows(db) == await expected_index_rows(db, Registry.builtin())
    assert untouched <= set(await db.fetch(ROW_ADDRESSES))  # the other resources' rows were only read
    # The fingerprints were right all along (the tables were not): they stay as they were.
    assert await db.fetch("SELECT res_id, index_hash FROM resource_index_state ORDER BY res_id") == fingerprints
