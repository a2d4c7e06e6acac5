"""The loader beside other writers: it locks a batch's rows in res_id order, and a deadlock (which only a
writer taking rows in another order can cause) costs a retry of the batch, not the load."""

from __future__ import annotations

import asyncio

import asyncpg
import orjson
import pytest

from tests.conftest import run_load

LOCK_ROW = "SELECT 1 FROM resource WHERE res_id = $1 FOR UPDATE"
LOADER_WAITING = """
SELECT count(*) FROM pg_stat_activity
WHERE datname = current_database() AND application_name = 'fhir-reindex-service' AND wait_event_type = 'Lock'"""


def organizations(path, name: str, *ids: str) -> str:
    path.write_bytes(b"\n".join(orjson.dumps({"resourceType": "Organization", "id": i, "name": name}) for i in ids))
    return str(path)


async def wait_for_loader_to_wait(db: asyncpg.Connection) -> None:
    async with asyncio.timeout(60):
        while not await db.fetchval(LOADER_WAITING):
            await asyncio.sleep(0.02)


async def test_a_deadlock_with_another_writer_is_retried(database_url, db, tmp_path):
    assert run_load(database_url, organizations(tmp_path / "v1.ndjson", "v1", "low", "high")).returncode == 0
    res_ids = {row["fhir_id"]: row["res_id"] for row in await db.fetch("SELECT fhir_id, res_id FROM resource")}
    assert res_ids["low"] < res_ids["high"]
    # The loader's sessions check for a deadlock after 2 s of waiting, the other writer's never in this
    # test: so PostgreSQL aborts the loader's transaction, and the test has 2 s to close the cycle.
    await db.execute(f"ALTER DATABASE \"{await db.fetchval('SELECT current_database()')}\" SET deadlock_timeout = '2s'")
    second = organizations(tmp_path / "v2.ndjson", "v2", "high", "low")  # in file order, `high` would lock first
    other = await asyncpg.connect(database_url)
    try:
        writer = other.transaction()
        await writer.start()
        await other.execute("SET LOCAL deadlock_timeout = '10min'")
        await other.execute(LOCK_ROW, res_ids["high"])
        loading = asyncio.create_task(asyncio.to_thread(run_load, database_url, second))
        await wait_for_loader_to_wait(db)  # on `high`, so holding `low`: locked in res_id order
        with pytest.raises(asyncpg.LockNotAvailableError):
            await db.execute(LOCK_ROW + " NOWAIT", res_ids["low"])
        await other.execute(LOCK_ROW, res_ids["low"])  # the cycle: granted once the loader's batch rolled back
        await writer.rollback()
        result = await loading
    finally:
        await other.close()
    assert result.returncode == 0, result.stderr
    assert "load_batch_retried" in result.stderr and "DeadlockDetectedError" in result.stderr
    stored = {row["fhir_id"]: (row["version"], orjson.loads(row["body"])["name"])
              for row in await db.fetch("SELECT fhir_id, version, body FROM resource")}
    assert stored == {"low": (2, "v2"), "high": (2, "v2")}
