"""Pause, resume and throttle of a running job over two replicas, against real PostgreSQL: a paused job
makes no progress and resumes from its checkpoints, a throttled one keeps to its rate whatever the number
of workers, the index ends as a clean extraction, and ended jobs are left as they ended."""

from __future__ import annotations

import asyncio
import time

import pytest

from service.app import create_app
from service.http.keys import POOL
from service.jobs import reindex_step
from service.jobs.start import ReindexPlan, start_reindex
from service.search.registry import Registry
from tests.indexes import expected_index_rows, stored_index_rows
from tests.test_reindex_engine import chunk_totals, wait_ended, wipe_indexes
from tests.test_reindex_faults import wait_progress
from tests.test_reindex_lifecycle import LEASE, POLL, batch_waiting, first_resource_locked

FHIR_JSON = {"Content-Type": "application/fhir+json"}
TYPES = ("Practitioner", "PractitionerRole")
STATUS = "/fhir/$hapi.fhir.reindex-status?_jobId={}"
PROCESSED = "SELECT coalesce(sum(processed), 0)::bigint FROM job_chunk WHERE job_id = $1"
RUNNING_CHUNKS = "SELECT count(*) FROM job_chunk WHERE job_id = $1 AND state = 'running'"


@pytest.fixture
def replica(settings):
    """Settings of a replica with two workers that notice a new or resumed job within a fifth of a second."""
    return settings.model_copy(update={"reindex_workers": 2, "reindex_poll_seconds": 0.2})


async def measured_rate(db, job_id, seconds: float) -> float:
    """Resources per second the job commits over the next `seconds`."""
    start, processed = time.monotonic(), await db.fetchval(PROCESSED, job_id)
    await asyncio.sleep(seconds)
    return (await db.fetchval(PROCESSED, job_id) - processed) / (time.monotonic() - start)


async def control(client, job_id, query: str):
    response = await client.post(f"{STATUS.format(job_id)}&{query}")
    return response.status, (await response.json(content_type=None))["issue"][0]["diagnostics"]


async def no_chunk_running(db, job_id, timeout: float = 5) -> None:
    async with asyncio.timeout(timeout):
        while await db.fetchval(RUNNING_CHUNKS, job_id):
            await asyncio.sleep(0.02)


@pytest.mark.dataset("plannet")
async def test_pause_resume_and_rethrottle_while_two_replicas_run_a_job(aiohttp_client, replica, db):
    stale = sum([await wipe_indexes(db, res_type) for res_type in TYPES])
    first = await aiohttp_client(create_app(replica))
    second = await aiohttp_client(create_app(replica))
    # Small batches and chunks: four workers over two replicas share the job, each batch a small step.
    started = await start_reindex(first.server.app[POOL], ReindexPlan(types=TYPES, batch_size=10), 0,
                                  chunk_size=200, throttle=200)
    job_id = started.job_id
    await wait_progress(db, job_id)
    await asyncio.sleep(0.5)  # every worker has a chunk and waits on the bucket
    assert 180 <= await measured_rate(db, job_id, 4) <= 220
    assert await db.fetchval("SELECT count(DISTINCT owner) FROM job_chunk WHERE job_id = $1", job_id) == 4

    assert await control(second, job_id, "_action=throttle&rate=100") == (
        202, f"$reindex job is throttled to 100 resources per second over all workers. Poll for status at the "
             f"following URL: {second.make_url(STATUS.format(job_id))}")
    await asyncio.sleep(0.5)
    assert 90 <= await measured_rate(db, job_id, 4) <= 110
    polled = await first.get(STATUS.format(job_id))
    assert polled.status == 202 and "throttled to 100/sec" in polled.headers["X-Progress"]

    status, _text = await control(first, job_id, "_action=pause")
    assert status == 202
    await no_chunk_running(db, job_id)  # each worker handed its chunk back at its next batch or throttle wait
    paused_at = await db.fetchval(PROCESSED, job_id)
    await asyncio.sleep(1.5)  # four poll intervals: idle workers looked for chunks and found none
    assert await db.fetchval(PROCESSED, job_id) == paused_at < stale
    assert await db.fetchval(RUNNING_CHUNKS, job_id) == 0
    polled = await second.get(STATUS.format(job_id))
    assert polled.status == 202 and polled.headers["Retry-After"] == "10"
    assert polled.headers["X-Progress"].startswith("$reindex job has been paused Overall progress: ")
    assert "left" not in polled.headers["X-Progress"]  # no time left while paused

    assert (await control(second, job_id, "_action=throttle"))[0] == 202  # no rate: unthrottled
    assert (await control(second, job_id, "_action=resume"))[0] == 202
    job = await wait_ended(db, job_id)
    assert job["state"] == "completed" and job["throttle_rate"] is None
    assert job["paused_seconds"] >= 1.5  # left out of the job's rate
    totals = await chunk_totals(db, job_id)
    # Every resource once, and a chunk handed back at the pause is not an attempt.
    assert (totals["processed"], totals["changed"], totals["attempts"]) == (stale, stale, 1)
    assert await stored_index_rows(db) == await expected_index_rows(db, Registry.builtin())


@pytest.mark.dataset("plannet")
async def test_a_pause_stops_a_slow_batch_at_the_next_heartbeat_and_is_not_an_attempt(aiohttp_client, settings, db,
                                                                                       database_url):
    practitioners = await wipe_indexes(db, "Practitioner")
    client = await aiohttp_client(create_app(settings.model_copy(update={
        "reindex_workers": 1, "reindex_poll_seconds": POLL, "reindex_lease_seconds": LEASE})))
    async with first_resource_locked(database_url, "Practitioner"):
        started = await start_reindex(client.server.app[POOL], ReindexPlan(types=("Practitioner",)), 0)
        await batch_waiting(db)
        assert (await control(client, started.job_id, "_action=pause"))[0] == 202
        # Handed back while the batch would still wait: a heartbeat (every third of the lease) saw the pause.
        await no_chunk_running(db, started.job_id, timeout=LEASE)
    totals = await chunk_totals(db, started.job_id)
    assert (totals["processed"], totals["attempts"]) == (0, 0)  # the batch rolled back; the claim undone
    assert (await control(client, started.job_id, "_action=resume"))[0] == 202
    assert (await wait_ended(db, started.job_id))["state"] == "completed"
    totals = await chunk_totals(db, started.job_id)
    assert (totals["processed"], totals["attempts"]) == (practitioners, 1)


@pytest.mark.dataset("plannet")
async def test_a_paused_job_is_cancelled_and_ended_jobs_are_left_as_they_ended(aiohttp_client, replica, db):
    await wipe_indexes(db, "Practitioner")
    client = await aiohttp_client(create_app(replica))
    started = await start_reindex(client.server.app[POOL], ReindexPlan(types=("Practitioner",), batch_size=5), 0,
                                  chunk_size=200)
    await wait_progress(db, started.job_id)
    assert (await control(client, started.job_id, "_action=pause"))[0] == 202
    assert await control(client, started.job_id, "_action=pause") == (
        202, f"$reindex job was paused already. Poll for status at the following URL: "
             f"{client.make_url(STATUS.format(started.job_id))}")
    await no_chunk_running(db, started.job_id)

    assert (await client.delete(STATUS.format(started.job_id))).status == 202
    job = await wait_ended(db, started.job_id, timeout=1)  # no worker holds a chunk: it ends at once
    assert job["state"] == "cancelled" and "Reindex (v3) Report" in job["report"]
    for query, undone in [("_action=pause", "paused"), ("_action=resume", "resumed"),
                          ("_action=throttle&rate=5", "throttled")]:
        assert await control(client, started.job_id, query) == (
            200, f"$reindex job has already ended as cancelled; it was not {undone}.")
    job = await db.fetchrow("SELECT * FROM job WHERE id = $1", started.job_id)
    assert (job["state"], job["throttle_rate"]) == ("cancelled", None)


async def test_controls_that_cannot_apply_are_refused(client, db):
    created = await client.post("/fhir/Organization", json={"resourceType": "Organization"}, headers=FHIR_JSON)
    assert created.status == 201
    throttled = {"resourceType": "Parameters", "parameter": [{"name": "url", "valueString": "Organization?"},
                                                             {"name": "throttle", "valueInteger": 150}]}
    # This app runs no workers: the job stays queued.
    started = await client.post("/fhir/$reindex", json=throttled, headers=FHIR_JSON)
    assert started.status == 202
    job_id = await db.fetchval("SELECT id FROM job")
    assert await db.fetchval("SELECT throttle_rate FROM job") == 150
    refusals = [
        ("", 400, "The _action parameter is required"),
        ("_action=stop", 400, "The _action parameter is required, one of: pause, resume, throttle"),
        ("_action=pause&rate=5", 400, "The rate parameter goes with _action=throttle only"),
        ("_action=throttle&rate=-1", 400, "The rate must be a whole number"),
        ("_action=throttle&rate=fast", 400, "The rate must be a whole number"),
        ("_action=pause&_action=resume", 400, "Parameter '_action' may appear at most once"),
        ("_action=pause&speed=1", 400, "Unknown parameter 'speed'"),
    ]
    for query, status, message in refusals:
        response = await client.post(f"{STATUS.format(job_id)}&{query}")
        assert response.status == status and message in await response.text(), query
    with_body = await client.post(f"{STATUS.format(job_id)}&_action=pause", json={"resourceType": "Parameters"},
                                  headers=FHIR_JSON)
    assert with_body.status == 400 and "not in a body" in await with_body.text()
    unknown = await client.post(STATUS.format("2f0e8e1c-0000-4000-8000-000000000000") + "&_action=pause")
    assert unknown.status == 404
    assert (await client.post("/fhir/$hapi.fhir.reindex-status?_action=pause")).status == 400
    job = await db.fetchrow("SELECT paused_at, throttle_rate FROM job")
    assert (job["paused_at"], job["throttle_rate"]) == (None, 150)  # nothing refused changed anything

    assert (await control(client, job_id, "_action=pause"))[0] == 202
    metrics = await (await client.get("/metrics")).text()
    assert f'fhir_reindex_job_total{{job_id="{job_id}",state="paused"}} 0.0' in metrics
    queued = await client.get(STATUS.format(job_id))
    assert queued.headers["X-Progress"] == ("$reindex job has been paused Overall progress: 0%. "
                                            "Processed 0 of 0 resources, throttled to 150/sec.")
    assert await control(client, job_id, "_action=resume") == (
        202, f"$reindex job has been resumed. Poll for status at the following URL: "
             f"{client.make_url(STATUS.format(job_id))}")
    assert (await client.get(STATUS.format(job_id))).headers["X-Progress"] == "$reindex job has not yet started"


@pytest.mark.dataset("plannet")
async def test_a_slow_chunk_reads_in_short_transactions(aiohttp_client, settings, db, monkeypatch):
    """A throttled chunk takes seconds; its read transaction, which holds back VACUUM, is renewed meanwhile."""
    monkeypatch.setattr(reindex_step, "SNAPSHOT_SECONDS", 0.3)
    organizations = await wipe_indexes(db, "Organization")
    client = await aiohttp_client(create_app(settings.model_copy(update={"reindex_workers": 1,
                                                                         "reindex_poll_seconds": 0.2})))
    started = await start_reindex(client.server.app[POOL], ReindexPlan(types=("Organization",), batch_size=5), 0,
                                  throttle=80)
    oldest = 0.0
    while (await db.fetchval("SELECT state FROM job WHERE id = $1", started.job_id)) != "completed":
        oldest = max(oldest, await db.fetchval(
            "SELECT coalesce(max(extract(epoch FROM clock_timestamp() - xact_start)), 0) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"))
        await asyncio.sleep(0.02)
    # The chunk took organizations / 80 s (over two); no transaction lasted much beyond 0.3 s.
    assert organizations / 80 > 2 and 0.2 < oldest < 1
    assert (await chunk_totals(db, started.job_id))["processed"] == organizations
    assert await stored_index_rows(db) == await expected_index_rows(db, Registry.builtin())
