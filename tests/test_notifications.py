"""A listening connection that PostgreSQL drops (a failover, pg_terminate_backend) is replaced, and NOTIFY
reaches the replica again: a new job is picked up at once, not at the next poll."""

from __future__ import annotations

import asyncio
import time

from service.app import create_app
from tests.test_reindex_http import parameters

FHIR_JSON = {"Content-Type": "application/fhir+json"}
LISTENERS = """
SELECT application_name, pid FROM pg_stat_activity
WHERE datname = current_database() AND application_name LIKE 'fhir-reindex-service listen %'"""


async def listeners(db, other_than: dict[str, int] | None = None, timeout: float = 5) -> dict[str, int]:
    """The pid of each listening session (jobs, search parameters), once each differs from `other_than`'s."""
    async with asyncio.timeout(timeout):
        while True:
            found = {row["application_name"]: row["pid"] for row in await db.fetch(LISTENERS)}
            if len(found) == 2 and not set(found.values()) & set((other_than or {}).values()):
                return found
            await asyncio.sleep(0.02)


async def test_a_terminated_listener_is_replaced_and_the_next_job_is_picked_up_at_once(aiohttp_client, settings, db):
    replica = settings.model_copy(update={"reindex_workers": 1, "reindex_poll_seconds": 60,
                                          "catalog_poll_seconds": 60})
    client = await aiohttp_client(create_app(replica))
    created = await client.post("/fhir/Organization", json={"resourceType": "Organization", "name": "Acme"},
                                headers=FHIR_JSON)
    assert created.status == 201
    before = await listeners(db)
    assert set(before) == {"fhir-reindex-service listen jobs", "fhir-reindex-service listen search_parameters"}
    assert await db.fetchval("SELECT bool_and(pg_terminate_backend(pid)) FROM unnest($1::int[]) AS pid",
                             list(before.values()))
    await listeners(db, other_than=before)  # listening again, on new sessions
    await asyncio.sleep(0.3)  # the workers have looked for work after the loss, found none, and wait again

    started = await client.post("/fhir/$reindex", json=parameters(("url", "valueString", "Organization?")),
                                headers={**FHIR_JSON, "Prefer": "respond-async"})
    assert started.status == 202
    posted = time.monotonic()
    async with asyncio.timeout(1):  # the poll is a minute away: only the NOTIFY can wake a worker this soon
        while await db.fetchval("SELECT state FROM job") == "queued":
            await asyncio.sleep(0.01)
    assert time.monotonic() - posted < 1
