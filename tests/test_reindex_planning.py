"""Planning happens in a worker, not in `POST $reindex`, and the job's estimate counts the resources its
chunks will read (live ones, matching its url filters), so its progress reaches 100%."""

from __future__ import annotations

from service.app import create_app
from service.http.keys import CATALOG, POOL
from service.jobs.planning import plan_next_job
from service.jobs.repository import job_progress
from service.jobs.start import covers
from service.jobs.status import job_status
from tests.test_reindex_engine import wait_ended
from tests.test_reindex_http import local, parameters

FHIR_JSON = {"Content-Type": "application/fhir+json"}
ASYNC = {**FHIR_JSON, "Prefer": "respond-async"}


async def organizations(client, names: list[str]) -> list[str]:
    ids = []
    for name in names:
        created = await client.post("/fhir/Organization", json={"resourceType": "Organization", "name": name},
                                    headers=FHIR_JSON)
        assert created.status == 201
        ids.append((await created.json())["id"])
    return ids


async def test_post_reindex_records_the_job_and_a_worker_plans_it(client, db):
    await organizations(client, ["Acme", "Globex"])
    started = await client.post("/fhir/$reindex", json=parameters(("url", "valueString", "Organization?")),
                                headers=ASYNC)
    assert started.status == 202
    job = await db.fetchrow("SELECT id, state, total_estimate FROM job")
    assert (job["state"], job["total_estimate"]) == ("queued", 0)
    assert await db.fetchval("SELECT count(*) FROM job_chunk") == 0  # this app runs no workers

    assert await plan_next_job(client.server.app[POOL], client.server.app[CATALOG], covers) == job["id"]
    assert await db.fetchval("SELECT total_estimate FROM job") == 2
    assert await db.fetchval("SELECT count(*) FROM job_chunk WHERE state = 'pending'") == 1
    assert await plan_next_job(client.server.app[POOL], client.server.app[CATALOG], covers) is None  # planned once


async def test_progress_reaches_100_percent_with_deletions_and_a_url_filter(aiohttp_client, settings, db):
    client = await aiohttp_client(create_app(settings.model_copy(update={"reindex_workers": 1,
                                                                         "reindex_poll_seconds": 0.2})))
    ids = await organizations(client, [f"Acme {n}" for n in range(6)] + [f"Globex {n}" for n in range(6)])
    for deleted in ids[::3]:  # two Acme and two Globex
        assert (await client.delete(f"/fhir/Organization/{deleted}")).status == 200

    for url, visited in (("Organization?", 8), ("Organization?name=acme", 4)):
        started = await client.post("/fhir/$reindex", json=parameters(("url", "valueString", url)), headers=ASYNC)
        job_id = local(started.headers["Content-Location"]).rpartition("=")[2]
        assert (await wait_ended(db, job_id))["state"] == "completed"
        progress = await job_progress(client.server.app[POOL], job_id)
        assert progress is not None
        assert (progress.processed, progress.total, job_status(progress).percent) == (visited, visited, 100), url
