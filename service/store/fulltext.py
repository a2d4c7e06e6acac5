"""Full-text search switched on and off for the whole database (sql/0013_fulltext_switch.sql).

Switching off disables the triggers that keep `resource_text` and empties it, in one transaction. Switching
on enables them again, then fills `resource_text` for the rows written meanwhile in short transactions of
one `res_id` range each, and only then lets searches use it; a crash part way leaves `building`, and
running it again goes on where the rows show it stopped. Searches read the state in their own snapshot
(see service/store/search.py), so each sees `on` together with every row, or refuses."""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum

from service.db import Connection
from service.fhir.errors import FhirError
from service.pools import Pool


class FullText(StrEnum):
    ON = "on"
    OFF = "off"
    BUILDING = "building"


SELECT_STATE = "SELECT state FROM fulltext_search"
LOCK_STATE = "SELECT state FROM fulltext_search FOR UPDATE"
SHARE_STATE = "SELECT state FROM fulltext_search FOR SHARE"
SET_STATE = "UPDATE fulltext_search SET state = $1"
SWITCH_TRIGGERS = ("ALTER TABLE resource {0} TRIGGER resource_text_insert, {0} TRIGGER resource_text_update")
# DELETE, not TRUNCATE: a search's snapshot from before the switch still sees `on` and every row (TRUNCATE
# would empty the table under it); VACUUM returns the space.
EMPTY = "DELETE FROM resource_text"
MAX_RES_ID = "SELECT coalesce(max(res_id), 0) FROM resource"
# The rows of one res_id range that have no vectors yet; a row the trigger wrote meanwhile is left alone, and
# nothing is written once an operator has switched it off again.
FILL_RANGE = """
INSERT INTO resource_text (res_id, narrative, content)
SELECT res_id, (v).narrative, (v).content
FROM (SELECT r.res_id, resource_text_vectors(resource_body_jsonb(r.body), length(r.body)) AS v
      FROM resource r
      WHERE r.res_id > $1 AND r.res_id <= $2 AND r.body IS NOT NULL
        AND NOT EXISTS (SELECT FROM resource_text t WHERE t.res_id = r.res_id)) AS bodies
WHERE v IS NOT NULL AND EXISTS (SELECT FROM fulltext_search WHERE state = 'building')
ON CONFLICT (res_id) DO NOTHING"""
FILL_STEP = 10_000  # res_ids per transaction: a few seconds of work at most


async def state(conn: Connection) -> FullText:
    return FullText(await conn.fetchval(SELECT_STATE))


async def require_on(conn: Connection, code: str, *, hold: bool = False) -> None:
    """Before a search reads resource_text: a 400 unless full-text search is on. A search in a snapshot of its
    own reads the state in it; a write transaction's (conditional) search holds it (`hold`) until it ends."""
    current = FullText(await conn.fetchval(SHARE_STATE if hold else SELECT_STATE))
    if current is not FullText.ON:
        why = "is switched off" if current is FullText.OFF else "is being switched on and is not ready yet"
        raise FhirError(400, f"Full-text search {why} on this server, so '{code}' cannot be searched "
                        "(an operator switches it on with `python -m service fulltext on`)", code="not-supported")


async def switch_off(pool: Pool) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(LOCK_STATE)
        await conn.execute(SWITCH_TRIGGERS.format("DISABLE"))
        await conn.execute(EMPTY)
        await conn.execute(SET_STATE, FullText.OFF.value)


async def switch_on(pool: Pool, progress: Callable[[int, int], None]) -> int:
    """Enable the triggers, fill resource_text (calling `progress(done, last)` with res_ids), then mark it on.
    Returns the rows filled."""
    async with pool.acquire() as conn:
        async with conn.transaction():
            if FullText(await conn.fetchval(LOCK_STATE)) is FullText.ON:
                return 0
            await conn.execute(SWITCH_TRIGGERS.format("ENABLE"))
            await conn.execute(SET_STATE, FullText.BUILDING.value)
        # Rows written from here on get their vectors from the triggers; only older ones need filling.
        last = await conn.fetchval(MAX_RES_ID)
        filled = 0
        for low in range(0, last, FILL_STEP):
            status = await conn.execute(FILL_RANGE, low, min(low + FILL_STEP, last))
            filled += int(status.rpartition(" ")[2])
            progress(min(low + FILL_STEP, last), last)
        async with conn.transaction():
            if FullText(await conn.fetchval(LOCK_STATE)) is FullText.BUILDING:
                await conn.execute(SET_STATE, FullText.ON.value)
        return filled
