"""Errors during a reindex, by class: a resource PostgreSQL refuses is one failure in the report while the
rest of the job is written; a permanent error fails the job at once with its SQLSTATE in the status."""

from __future__ import annotations

from collections import Counter

from service.app import create_app
from service.http.keys import POOL
from service.jobs.start import ReindexPlan, start_reindex
from service.search.registry import Registry
from tests.indexes import expected_index_rows, stored_index_rows
from tests.test_reindex_engine import chunk_totals, wait_ended

FHIR_JSON = {"Content-Type": "application/fhir+json"}
NAMES = ("Acme", "Globex", "Poison Org", "Initech", "Umbrella")


async def organizations(client) -> dict[str, str]:
    """The Organizations of NAMES, stored with their index rows; returns their ids by name."""
    ids = {}
    for name in NAMES:
        created = await client.post("/fhir/Organization", json={"resourceType": "Organization", "name": name},
                                    headers=FHIR_JSON)
        assert created.status == 201
        ids[name] = (await created.json())["id"]
    return ids


async def lost_rows(db) -> None:
    """Every resource's string and token rows lost, and fingerprints unknown: a job compares each resource with its
    stored rows and writes those rows again."""
    await db.execute("DELETE FROM idx_string; DELETE FROM idx_token")
    await db.execute("UPDATE resource_index_state SET index_hash = NULL")


async def test_a_resource_postgres_refuses_is_a_reported_failure_and_the_rest_is_written(aiohttp_client, settings,
                                                                                           db):
    client = await aiohttp_client(create_app(settings.model_copy(update={"reindex_workers": 1,
                                                                         "reindex_poll_seconds": 0.2})))
    ids = await organizations(client)
    # From now on PostgreSQL refuses this one resource's index rows (a constraint its data breaks).
    await db.execute("ALTER TABLE idx_string ADD CONSTRAINT no_poison CHECK (exact <> 'Poison Org') NOT VALID")
    await lost_rows(db)
    started = await start_reindex(client.server.app[POOL], ReindexPlan(types=("Organization",), batch_size=50), 0)

    job = await wait_ended(db, started.job_id)
    # A job with a failure ends `failed` (the design's rule: its index is not complete) after writing the rest.
    assert (job["state"], job["error"]) == ("failed", "1 resources could not be reindexed")
    assert f"Organization/{ids['Poison Org']}: SQLSTATE 23514: new row for relation \"idx_string\" violates " \
           "check constraint \"no_poison\"" in job["report"]
    assert "Total Resources Changed   : 4 " in job["report"]
    totals = await chunk_totals(db, started.job_id)
    assert (totals["processed"], totals["changed"], totals["attempts"]) == (5, 4, 1)  # no retry
    unknown = await db.fetch("SELECT fhir_id FROM resource JOIN resource_index_state s USING (res_id) "
                             "WHERE s.index_hash IS NULL")
    assert [row["fhir_id"] for row in unknown] == [ids["Poison Org"]]
    # Every other resource's rows were written again; the refused one keeps the rows it had (none of those lost).
    expected = await expected_index_rows(db, Registry.builtin())
    poison = await db.fetchval("SELECT res_id FROM resource WHERE fhir_id = $1", ids["Poison Org"])
    for table in ("idx_string", "idx_token"):
        expected[table] = Counter({row: count for row, count in expected[table].items() if row[0] != poison})
    assert await stored_index_rows(db) == expected


async def test_a_permanent_error_fails_the_job_at_once_with_its_sqlstate(aiohttp_client, settings, db):
    client = await aiohttp_client(create_app(settings.model_copy(update={"reindex_workers": 1,
                                                                         "reindex_poll_seconds": 0.2})))
    ids = await organizations(client)
    res_id = await db.fetchval("SELECT res_id FROM resource WHERE fhir_id = $1", ids["Initech"])
    # A trigger that refuses with an SQLSTATE of its own: not about the data, and no retry will change it.
    await db.execute(f"""
        CREATE FUNCTION refuse_tokens() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.res_id = {res_id} THEN
                RAISE EXCEPTION 'token rows are frozen' USING ERRCODE = 'FX001';
            END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER refuse_tokens BEFORE INSERT ON idx_token FOR EACH ROW EXECUTE FUNCTION refuse_tokens();""")
    await lost_rows(db)
    started = await start_reindex(client.server.app[POOL], ReindexPlan(types=("Organization",), batch_size=2), 0)

    job = await wait_ended(db, started.job_id, timeout=10)
    assert (job["state"], job["error"]) == ("failed", "chunk 0 (Organization): SQLSTATE FX001: token rows are frozen")
    assert (await chunk_totals(db, started.job_id))["attempts"] == 1
    status = await client.get(f"/fhir/$hapi.fhir.reindex-status?_jobId={started.job_id}")
    assert status.headers["X-Progress"] == ("$reindex job has failed with error: chunk 0 (Organization): "
                                            "SQLSTATE FX001: token rows are frozen")
    # The batch before the refused one was written; the refused batch was rolled back whole.
    assert await db.fetchval("SELECT count(*) FROM resource_index_state WHERE index_hash IS NOT NULL") == 2
