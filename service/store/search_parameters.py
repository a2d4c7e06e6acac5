"""The custom SearchParameter change log: recording changes, and reading what the catalog is built from."""

from __future__ import annotations

import asyncpg
import structlog

from service.db import Connection
from service.search.catalog import Catalog, Catalogs, ChangeLog, SearchParameterChange
from service.store.notifications import CONNECTION_ERRORS, listening, reraise_if_cancelling

log = structlog.get_logger(__name__)

CHANNEL = "search_parameters"

SELECT_PREVIOUS = """
SELECT code, base FROM search_parameter_change WHERE res_id = $1 ORDER BY generation DESC LIMIT 1"""
INSERT_CHANGE = """
INSERT INTO search_parameter_change (res_id, code, base, definition) VALUES ($1, $2, $3, $4)
RETURNING generation"""
NOTIFY_CHANGE = "SELECT pg_notify($1, $2::text)"
# The catalog's state key: marking changes indexed leaves the generation alone but lowers the count.
SELECT_STATE = """
SELECT coalesce(max(generation), 0) AS generation, count(*) FILTER (WHERE NOT indexed) AS unindexed
FROM search_parameter_change"""
SELECT_CURRENT_DEFINITIONS = """
SELECT definition FROM (
    SELECT DISTINCT ON (res_id) definition, generation FROM search_parameter_change
    ORDER BY res_id, generation DESC
) latest
WHERE definition IS NOT NULL ORDER BY generation"""
SELECT_PENDING = "SELECT code, base FROM search_parameter_change WHERE NOT indexed"
SELECT_CHANGES = "SELECT generation, code, base FROM search_parameter_change ORDER BY generation"
SELECT_INTRODUCED = "SELECT code, base, introduced FROM search_parameter_code"
# Changes are serialised so generations commit in order: a catalog read at generation G then holds
# every change up to G, which is what rows indexed at G (and `Catalog.stale_codes`) rely on.
LOCK_CHANGES = "SELECT pg_advisory_xact_lock($1)"
# Every other write takes it shared: a change cannot commit while a write indexed with the generation before
# it is still open, so no write commits rows of a generation older than the change log's.
LOCK_CHANGES_SHARED = "SELECT pg_advisory_xact_lock_shared($1)"
CHANGES_LOCK_KEY = 7_461_726_964_657_802
SELECT_GENERATION = "SELECT coalesce(max(generation), 0) FROM search_parameter_change"


async def record_change(conn: Connection, res_id: int, change: SearchParameterChange | None) -> int | None:
    """Log a change of a SearchParameter resource (inside the write's transaction) and notify replicas.

    `change` None is a deletion. A change of code or base leaves the old (base, code) stale as well,
    so it is logged as a definition-less row first. Returns the new generation (None: nothing to log).
    """
    await conn.execute(LOCK_CHANGES, CHANGES_LOCK_KEY)
    previous = await conn.fetchrow(SELECT_PREVIOUS, res_id)
    if change is None:
        if previous is None:
            return None
        change = SearchParameterChange(previous["code"], list(previous["base"]), None)
    elif previous is not None and (previous["code"], list(previous["base"])) != (change.code, change.base):
        await conn.fetchval(INSERT_CHANGE, res_id, previous["code"], previous["base"], None)
    generation: int = await conn.fetchval(INSERT_CHANGE, res_id, change.code, change.base, change.definition)
    await conn.execute(NOTIFY_CHANGE, CHANNEL, str(generation))  # delivered at commit, to every replica
    return generation


async def catalog_for_write(conn: Connection, catalogs: Catalogs, logs_change: bool) -> Catalog:
    """The catalog a write transaction indexes with: that of the change log's latest generation.

    Call inside the write's transaction, before extracting. The change log's lock is taken until commit
    (exclusive when the write logs a SearchParameter change, shared otherwise), so the generation read
    here stays the latest until this transaction commits; a catalog behind it (its NOTIFY not arrived yet)
    is refreshed first, on this connection."""
    await conn.execute(LOCK_CHANGES if logs_change else LOCK_CHANGES_SHARED, CHANGES_LOCK_KEY)
    if await conn.fetchval(SELECT_GENERATION) > catalogs.current.generation:
        # Under the lock no change commits meanwhile; the `indexed` flags it reads may move, which
        # touches only pending warnings, and a later refresh corrects those.
        await _refresh_on(conn, catalogs)
    return catalogs.current


async def refresh_catalog(pool: asyncpg.Pool, catalogs: Catalogs) -> bool:
    """Install the catalog of the latest change, read in one snapshot; False when already current."""
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read", readonly=True):
        return await _refresh_on(conn, catalogs)


async def _refresh_on(conn: Connection, catalogs: Catalogs) -> bool:
    state = await conn.fetchrow(SELECT_STATE)
    assert state is not None, "an aggregate without GROUP BY has a row"
    if (state["generation"], state["unindexed"]) == (catalogs.current.generation, catalogs.current.unindexed):
        return False
    return catalogs.install(ChangeLog(
        state["generation"],
        [row["definition"] for row in await conn.fetch(SELECT_CURRENT_DEFINITIONS)],
        [(row["code"], list(row["base"])) for row in await conn.fetch(SELECT_PENDING)],
        [(row["generation"], row["code"], list(row["base"])) for row in await conn.fetch(SELECT_CHANGES)],
        [(row["code"], row["base"], row["introduced"]) for row in await conn.fetch(SELECT_INTRODUCED)]))


async def follow_changes(pool: asyncpg.Pool, catalogs: Catalogs, poll_seconds: float) -> None:
    """Keep `catalogs` current: refresh on every NOTIFY, and every `poll_seconds` in case a notification
    was missed. Runs until cancelled."""
    async with listening(pool, CHANNEL, poll_seconds) as changes:
        while True:
            seen = changes.count  # before the read, so a change during it is not lost
            try:
                if await refresh_catalog(pool, catalogs):
                    log.info("search_parameters_changed", generation=catalogs.current.generation)
            except CONNECTION_ERRORS as exc:
                reraise_if_cancelling(exc)
                log.warning("search_parameter_refresh_failed", error=type(exc).__name__, detail=str(exc))
            await changes.wait(seen, poll_seconds)
