"""Connections: the job engine has its own pool out of FHIR_POOL_MAX_SIZE, so requests keep theirs; sizes that
cannot work are refused; every statement of either pool runs under a statement timeout."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from service.app import create_app
from service.http.keys import JOB_POOL, POOL
from service.pools import _HandOffQueue, create_pool
from service.settings import PoolSize
from service.startup import SettingsError


def test_a_pool_too_small_for_the_workers_is_refused_naming_what_to_change(settings):
    crowded = settings.model_copy(update={"pool_max_size": 13, "reindex_workers": 3})
    (problem,) = crowded.problems()
    assert problem.startswith("FHIR_POOL_MAX_SIZE (13) is too small: the job engine takes 12 connections")
    assert "FHIR_REINDEX_WORKERS (3)" in problem and "at least 14" in problem
    with pytest.raises(SettingsError, match="FHIR_POOL_MAX_SIZE"):
        create_app(crowded)
    assert settings.model_copy(update={"pool_max_size": 14, "reindex_workers": 3}).problems() == []


def test_a_lock_timeout_not_below_the_statement_timeout_is_refused(settings):
    problems = settings.model_copy(update={"lock_timeout_ms": 60_000}).problems()
    assert problems == ["FHIR_LOCK_TIMEOUT_MS (60000) must be below FHIR_STATEMENT_TIMEOUT_MS (60000), or a write "
                        "waiting for a row times out instead of answering 409"]
    too_few = settings.model_copy(update={"pool_min_size": 10, "pool_max_size": 8}).problems()
    assert too_few and too_few[0].startswith("FHIR_POOL_MIN_SIZE (10) is above the 5 connections requests get")


async def test_the_job_engine_uses_its_own_pool_and_requests_keep_theirs(aiohttp_client, settings):
    app = create_app(settings.model_copy(update={"reindex_workers": 2, "reindex_poll_seconds": 0.2}))
    client = await aiohttp_client(app)
    requests, jobs = app[POOL], app[JOB_POOL]
    assert (requests.get_max_size(), jobs.get_max_size()) == (14 - 9, 9)  # 3 per worker, 3 for listening, upkeep
    async with asyncio.timeout(10):  # the two listeners hold job connections for good
        while jobs.get_size() - jobs.get_idle_size() < 2:
            await asyncio.sleep(0.02)
    assert requests.get_size() == requests.get_idle_size(), "no request runs, so no request connection is held"
    assert await requests.fetchval("SHOW statement_timeout") == "1min"
    assert await jobs.fetchval("SHOW statement_timeout") == "10min"
    # Batch statements are planned for their arguments, requests' may use a generic plan.
    assert (await requests.fetchval("SHOW plan_cache_mode"), await jobs.fetchval("SHOW plan_cache_mode")) == (
        "auto", "force_custom_plan")

    # Every connection the job engine may take is taken: requests are still served, five at once.
    held = [await jobs.acquire() for _ in range(jobs.get_max_size() - (jobs.get_size() - jobs.get_idle_size()))]
    try:
        responses = await asyncio.gather(*(client.get("/fhir/Organization?name=x") for _ in range(5)))
        assert [response.status for response in responses] == [200] * 5
    finally:
        for conn in held:
            await jobs.release(conn)


async def test_a_statement_past_the_timeout_is_503_timeout(aiohttp_client, settings, db):
    client = await aiohttp_client(create_app(settings.model_copy(update={"statement_timeout_ms": 300,
                                                                         "lock_timeout_ms": 100})))
    async with db.transaction():
        await db.execute("LOCK TABLE resource IN ACCESS EXCLUSIVE MODE")  # every read of it now waits
        response = await client.get("/fhir/Organization/org-1")
    assert response.status == 503
    issue = (await response.json(content_type=None))["issue"][0]
    assert (issue["severity"], issue["code"]) == ("error", "timeout")
    assert (await client.get("/fhir/Organization/org-1")).status == 404  # the lock is gone: answered again


MARKER = "SELECT current_setting('fhir.test_marker', true)"


async def test_only_a_stateless_read_skips_the_reset_of_its_connection(database_url, settings):
    pool = await create_pool(database_url, settings, PoolSize(1, 1, 60_000), acquire_timeout=3)
    try:
        async with pool.acquire() as conn:  # any other use: what it set is reset on release
            await conn.execute("SELECT set_config('fhir.test_marker', 'set', false)")
        assert await pool.fetchval(MARKER) in ("", None)
        # A statement that does set something is not one to read this way: done here only to see that the
        # release of a stateless read sends no reset statement (one connection: the same session next).
        assert await pool.fetchrow_stateless("SELECT set_config('fhir.test_marker', 'kept', false)")
        assert await pool.fetchval(MARKER) == "kept"
        # The stateless mark went with that one release: the fetchval above and this block are reset again.
        async with pool.acquire() as conn:
            await conn.execute("SELECT set_config('fhir.test_marker', 'again', false)")
        assert await pool.fetchval(MARKER) in ("", None)
        async with pool.acquire() as conn, conn.transaction():  # a write transaction's connection too
            await conn.execute("SELECT set_config('fhir.test_marker', 'in transaction', false)")
        assert await pool.fetchval(MARKER) in ("", None)
        # A search's transaction: its settings are LOCAL, gone at its end, so no reset follows it.
        async with pool.acquire_stateless() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            await conn.execute("SELECT set_config('statement_timeout', '5ms', true)")
            await conn.execute("SELECT set_config('fhir.test_marker', 'search', false)")
        assert (await pool.fetchval(MARKER), await pool.fetchval("SHOW statement_timeout")) == ("search", "1min")
        # Unless it fails: then its connection is reset as any other.
        with pytest.raises(asyncpg.DivisionByZeroError):
            async with pool.acquire_stateless() as conn:
                await conn.execute("SELECT set_config('fhir.test_marker', 'failed', false)")
                await conn.execute("SELECT 1 / 0")
        assert await pool.fetchval(MARKER) in ("", None)
    finally:
        await pool.close()


async def test_connections_go_to_their_waiters_first_in_first_served(database_url, settings):
    """Eight clients take turns on two connections: while one waits, at most the seven others are served once
    each before it. With asyncpg's own queue, which lets a newcomer take a connection released for a waiter,
    some waiters saw ten others served first."""
    pool = await create_pool(database_url, settings, PoolSize(2, 2, 60_000), acquire_timeout=10)
    served, overtaken = 0, []

    async def client(rounds: int) -> None:
        nonlocal served
        for _ in range(rounds):
            before = served
            async with pool.acquire() as conn:
                overtaken.append(served - before)
                served += 1
                await conn.fetchval("SELECT 1")
    try:
        for _ in range(4):  # the first round of a process tends to be orderly anyway
            await asyncio.gather(*(client(100) for _ in range(8)))
    finally:
        await pool.close()
    assert served == 3200
    assert max(overtaken) <= 7


class _Holder:
    """What the queue needs of asyncpg's connection holder."""

    def is_connected(self) -> bool:
        return True


async def test_a_connection_handed_to_a_waiter_that_gave_up_goes_to_the_next_one():
    queue = _HandOffQueue(maxsize=2)
    first, second = asyncio.create_task(queue.get()), asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    holder = _Holder()
    queue.put_nowait(holder)  # to `first`, which gives up (its acquire timed out) before it runs
    first.cancel()
    assert await second is holder
    assert first.cancelled() and queue.empty()


async def test_a_newcomer_queues_behind_waiters_and_a_free_connection_is_taken_at_once():
    queue, holders = _HandOffQueue(maxsize=2), [_Holder(), _Holder()]
    waiter = asyncio.create_task(queue.get())
    await asyncio.sleep(0)
    queue.put_nowait(holders[0])
    newcomer = asyncio.create_task(queue.get())  # runs before `waiter` has taken its connection
    await asyncio.sleep(0)
    assert not newcomer.done()
    assert await waiter is holders[0]
    queue.put_nowait(holders[1])
    assert await newcomer is holders[1]
    queue.put_nowait(holders[0])
    assert await queue.get() is holders[0]
