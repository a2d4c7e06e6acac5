"""Faults during a reindex: a worker process SIGKILLed mid-job, and database connections dropped under a
running worker. Either way the job completes, no resource is counted twice, and the index tables end
exactly as a clean extraction gives them."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

import pytest

from service.app import create_app
from service.http.keys import POOL
from service.jobs.start import ReindexPlan, start_reindex
from service.pools import create_pool
from service.search.registry import Registry
from tests.indexes import expected_index_rows, stored_index_rows
from tests.test_process import free_port
from tests.test_reindex_engine import chunk_totals, wait_ended, wipe_indexes

TYPES = ("Practitioner", "PractitionerRole")


@pytest.fixture
async def stale_plannet(database_url, db) -> int:
    """Plan-Net (mark the test dataset("plannet")) with the indexes of TYPES wiped; returns how many
    resources need reindexing."""
    return sum([await wipe_indexes(db, res_type) for res_type in TYPES])


async def wait_progress(db, job_id) -> int:
    async with asyncio.timeout(60):
        while not (processed := await db.fetchval(
                "SELECT coalesce(sum(processed), 0) FROM job_chunk WHERE job_id = $1", job_id)):
            await asyncio.sleep(0.005)
    return processed


@pytest.mark.dataset("plannet")
async def test_a_sigkilled_worker_process_is_resumed_by_another(aiohttp_client, settings, database_url, db,
                                                                stale_plannet, tmp_path):
    env = {**os.environ, "DATABASE_URL": database_url, "FHIR_PORT": str(free_port()), "FHIR_AUTH_MODE": "unsigned",
           "FHIR_REINDEX_WORKERS": "1", "FHIR_REINDEX_LEASE_SECONDS": "2", "FHIR_REINDEX_POLL_SECONDS": "0.2"}
    with (tmp_path / "worker.log").open("wb") as log:
        worker = subprocess.Popen([sys.executable, "-m", "service"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        pool = await create_pool(database_url, settings)
        try:
            started = await start_reindex(pool, ReindexPlan(types=TYPES, batch_size=5), 0, chunk_size=100_000)
        finally:
            await pool.close()
        processed = await wait_progress(db, started.job_id)
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
    assert processed < stale_plannet, "the job finished before the kill; the test proves nothing"

    replica = settings.model_copy(update={"reindex_workers": 1, "reindex_poll_seconds": 0.2,
                                          "reindex_lease_seconds": 2})
    await aiohttp_client(create_app(replica))  # takes the chunk over once the dead lease expires
    job = await wait_ended(db, started.job_id)
    assert job["state"] == "completed"
    totals = await chunk_totals(db, started.job_id)
    assert totals["processed"] == stale_plannet and totals["attempts"] == 2
    assert await stored_index_rows(db) == await expected_index_rows(db, Registry.builtin())


@pytest.mark.dataset("plannet")
async def test_dropped_connections_are_retried_and_the_job_completes(aiohttp_client, settings, db, stale_plannet):
    # A short lease: if releasing the chunk also meets a dropped connection, expiry hands it back.
    replica = settings.model_copy(update={"reindex_workers": 1, "reindex_poll_seconds": 0.2,
                                          "reindex_lease_seconds": 2})
    client = await aiohttp_client(create_app(replica))
    started = await start_reindex(client.server.app[POOL], ReindexPlan(types=TYPES, batch_size=5), 0,
                                  chunk_size=100_000)
    await wait_progress(db, started.job_id)
    dropped = await db.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid() AND application_name LIKE 'fhir-reindex-service%'")
    assert dropped > 0
    job = await wait_ended(db, started.job_id)
    assert job["state"] == "completed"
    totals = await chunk_totals(db, started.job_id)
    assert totals["processed"] == stale_plannet and totals["attempts"] >= 2
    assert await stored_index_rows(db) == await expected_index_rows(db, Registry.builtin())
