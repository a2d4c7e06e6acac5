"""The index state of each live resource in `resource_index_state` (sql/0012): carried over by the migration, kept
by every writer (through the old columns of `resource`, as the previous release writes them), and marked by a
reindex job without touching the resource's own row."""

from __future__ import annotations

import asyncio

import asyncpg
import orjson
import pytest

from service.db import load_migrations, migrate
from service.http.keys import POOL
from service.jobs.reindex_batch import write_prepared
from service.jobs.start import ReindexPlan
from service.search.extractor import current as current_extractor
from service.search.registry import Registry
from service.search.rows import fingerprint
from tests.bundles import bundle, entry
from tests.conftest import run_load
from tests.test_migrations import empty_database_url  # noqa: F401
from tests.test_reindex_engine import first_batch_prepared
from tests.test_reindex_lifecycle import batch_waiting

FHIR_JSON = {"Content-Type": "application/fhir+json"}
STATE = "SELECT res_id, res_type, version, index_gen, index_hash, index_extractor FROM resource_index_state ORDER BY 1"
OLD_COLUMNS = """
SELECT res_id, res_type, version, index_gen, index_hash, index_extractor FROM resource WHERE NOT deleted ORDER BY 1"""
STATE_UPDATES = "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'resource_index_state'"
INSERT_RESOURCE = """
INSERT INTO resource (res_type, fhir_id, version, last_updated, deleted, body, index_gen, index_hash, index_extractor)
VALUES ('Organization', $1, $2, now(), $3, $4, $5, $6, $7)"""


def organization(fhir_id: str, name: str) -> dict[str, object]:
    return {"resourceType": "Organization", "id": fhir_id, "name": name}


async def test_the_migration_carries_the_state_of_live_resources_over(empty_database_url):  # noqa: F811
    conn = await asyncpg.connect(empty_database_url)
    try:
        migrations = load_migrations()
        await migrate(conn, [migration for migration in migrations if migration.version < 12])
        body = orjson.dumps(organization("a", "A"))
        await conn.execute(INSERT_RESOURCE, "a", 3, False, body, 5, -42, 7)
        await conn.execute(INSERT_RESOURCE, "unknown", 1, False, body, 0, None, None)  # before 0005 and 0006
        await conn.execute(INSERT_RESOURCE, "gone", 2, True, None, 5, None, 7)
        await migrate(conn, migrations)
        state = [tuple(row)[1:] for row in await conn.fetch(STATE)]
    finally:
        await conn.close()
    assert state == [("Organization", 3, 5, -42, 7), ("Organization", 1, 0, None, None)]  # no state when deleted


async def test_every_writer_records_the_state_of_what_it_wrote(client, db, database_url, tmp_path):
    for fhir_id in ("o1", "o2"):
        assert (await client.put(f"/fhir/Organization/{fhir_id}", json=organization(fhir_id, "First"),
                                 headers=FHIR_JSON)).status == 201
    assert (await client.post("/fhir/Organization", json=organization("x", "Posted"),
                              headers={**FHIR_JSON, "If-None-Exist": "name=Posted"})).status == 201
    updated = await client.put("/fhir/Organization/o1", json=organization("o1", "Second"), headers=FHIR_JSON)
    assert updated.status == 200
    transaction = bundle("transaction", [entry("PUT", "Organization/o3", organization("o3", "In a bundle")),
                                         entry("DELETE", "Organization/o2")])
    assert (await client.post("/fhir", json=transaction, headers=FHIR_JSON)).status == 200
    source = tmp_path / "orgs.ndjson"
    source.write_bytes(b"\n".join(orjson.dumps(organization(fhir_id, "Loaded")) for fhir_id in ("o1", "o4")))
    assert run_load(database_url, str(source)).returncode == 0

    state = await db.fetch(STATE)
    assert state == await db.fetch(OLD_COLUMNS)  # live ones only: the deleted o2 has none
    assert len(state) == 4
    bodies = dict(await db.fetch("SELECT res_id, body FROM resource"))
    registry = Registry.builtin()
    for row in state:
        assert (row["index_gen"], row["index_extractor"]) == (0, current_extractor().number)
        assert row["index_hash"] == fingerprint(registry.extract(orjson.loads(bodies[row["res_id"]])))


async def test_writes_of_the_previous_release_are_carried_over(client, db):
    """That release sets the old columns of `resource`, always the three together."""
    assert (await client.put("/fhir/Organization/o1", json=organization("o1", "A"), headers=FHIR_JSON)).status == 201
    await db.execute("UPDATE resource SET version = 2, index_gen = 3, index_hash = 4, index_extractor = 5 "
                     "WHERE fhir_id = 'o1'")
    assert [tuple(row)[1:] for row in await db.fetch(STATE)] == [("Organization", 2, 3, 4, 5)]
    await db.execute("UPDATE resource SET version = 3, deleted = true, body = NULL, index_gen = 3, index_hash = NULL, "
                     "index_extractor = 5 WHERE fhir_id = 'o1'")
    assert await db.fetch(STATE) == []


async def hot_updates(db) -> tuple[int, int]:
    await db.execute("SELECT pg_stat_clear_snapshot()")
    row = await db.fetchrow(STATE_UPDATES)
    return row["n_tup_upd"], row["n_tup_hot_upd"]


async def test_a_job_marks_the_state_in_place_and_leaves_resource_rows_alone(client, db, database_url):
    for number in range(3):
        assert (await client.put(f"/fhir/Organization/o{number}", json=organization(f"o{number}", "A"),
                                 headers=FHIR_JSON)).status == 201
    await db.execute("UPDATE resource_index_state SET index_hash = NULL")  # unknown rows: compared, found current
    resources = await db.fetch("SELECT res_id, xmin::text, ctid::text FROM resource ORDER BY res_id")
    batch, plan = await first_batch_prepared(client, ReindexPlan(types=("Organization",)))
    before = await hot_updates(db)
    writer = await asyncpg.connect(database_url)
    try:
        async with writer.transaction():
            outcome = await write_prepared(writer, "Organization", batch, plan)
        await writer.execute("SELECT pg_stat_force_next_flush()")  # flushed once the session is idle
    finally:
        await writer.close()
    assert (outcome.changed, outcome.unchanged) == (0, 3)
    assert await db.fetch("SELECT res_id, xmin::text, ctid::text FROM resource ORDER BY res_id") == resources
    assert None not in [row["index_hash"] for row in await db.fetch(STATE)]
    async with asyncio.timeout(15):
        while (after := await hot_updates(db))[0] < before[0] + 3:
            await asyncio.sleep(0.1)
    # Same generation, same extractor: no index entry changes, so every update is HOT.
    assert (after[0] - before[0], after[1] - before[1]) == (3, 3)


@pytest.mark.parametrize("optimistic_lock", [True, False])
async def test_a_batch_waiting_for_a_writer_sees_what_it_wrote(client, db, database_url, optimistic_lock):
    """The batch's marking waits for the state row a writer holds, then checks the version that writer left."""
    assert (await client.put("/fhir/Organization/o1", json=organization("o1", "Old"), headers=FHIR_JSON)).status == 201
    await db.execute("UPDATE resource_index_state SET index_hash = NULL")
    batch, plan = await first_batch_prepared(client, ReindexPlan(types=("Organization",),
                                                                 optimistic_lock=optimistic_lock))
    pool = client.server.app[POOL]
    writer = await asyncpg.connect(database_url)
    try:
        async with pool.acquire() as conn:
            async with writer.transaction():  # a new version, as the previous release writes one
                await writer.execute("UPDATE resource SET version = 2, index_gen = 0, index_hash = NULL, "
                                     "index_extractor = $1 WHERE fhir_id = 'o1'", current_extractor().number)
                marking = asyncio.create_task(_write(conn, batch, plan))
                await batch_waiting(db)
            outcome = await marking
    finally:
        await writer.close()
    state = await db.fetchrow(STATE)
    if optimistic_lock:  # left alone: the new version indexed itself
        assert (outcome.changed, state["version"], state["index_hash"]) == (0, 2, None)
    else:  # marked over it, as with the state on `resource` (its rows were found current)
        assert (outcome.changed, state["version"]) == (0, 2) and state["index_hash"] is not None


async def _write(conn, batch, plan):
    async with conn.transaction():
        return await write_prepared(conn, "Organization", batch, plan)
