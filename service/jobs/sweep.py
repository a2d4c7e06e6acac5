"""The sweep in a job's final transaction, before custom parameter changes are marked indexed.

Writers take the change log's lock and index with its latest generation, so once a change has committed no
write stamps rows below it. What still can: a writer that does not take the lock (a replica of an older
release during a rolling upgrade, or SQL run by hand), and a concurrent job started before the change,
whose batch rewrites a resource between this job's read and write (this job then leaves it alone). Such
resources are found through the index on (index_extractor, res_type, index_gen) of `resource_index_state` and
re-extracted here; there are normally none. At most one batch (the job's `batchSize`) is swept: when a type has
more, the changes of that type stay pending, so searches keep warning, and the next job over the type
re-extracts them."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import asyncpg
import structlog

from service.db import Connection
from service.jobs.index_state import indexed_below
from service.jobs.reindex_batch import write_prepared
from service.jobs.start import ReindexPlan
from service.jobs.stored_rows import prepare_compared
from service.search.catalog import Catalog, Catalogs
from service.search.registry import concrete_types
from service.search.sql import CHUNK_SELECT

log = structlog.get_logger(__name__)

# Index states locked in res_id order, as a batch's marking locks them; still below the generation once locked.
SELECT_LOCKED = f"""
{CHUNK_SELECT}
WHERE r.res_id = ANY($1::bigint[]) AND st.index_gen < $2 ORDER BY r.res_id FOR UPDATE OF st"""


class Sweeper:
    """A `Sweep` (jobs/repository.py) that extracts with this worker's catalog (at the job's generation or
    later, as the worker followed it before its chunk)."""

    def __init__(self, catalogs: Catalogs) -> None:
        self._catalogs = catalogs

    async def __call__(self, conn: Connection, parameters: dict[str, Any],
                       changes: list[asyncpg.Record]) -> tuple[list[asyncpg.Record], list[str]]:
        plan = replace(ReindexPlan.from_parameters(parameters), optimize_storage="NONE", force=False)
        catalog, budget = self._catalogs.current, plan.batch_size
        left, notes = set(), []
        for res_type, generation in sorted(_latest_change_by_type(changes).items()):
            res_ids = await indexed_below(conn, res_type, generation, budget + 1)
            if not res_ids:
                continue
            swept = False
            if len(res_ids) <= budget:
                await _reindex(conn, res_type, res_ids, generation, catalog, plan)
                swept = not await indexed_below(conn, res_type, generation, 1)  # none failed, none left
            log.warning("job_swept", res_type=res_type, generation=generation, resources=len(res_ids), swept=swept)
            if swept:
                budget -= len(res_ids)
                notes.append(f"{res_type}: {len(res_ids)} resources written below generation {generation} after "
                             "their chunk was done were re-extracted")
            else:
                left.add(res_type)
                notes.append(f"{res_type}: resources written below generation {generation} after their chunk was "
                             "done could not all be re-extracted here; its parameters stay pending until the next "
                             "$reindex of the type")
        kept = [change for change in changes if not set(concrete_types(change["base"])) & left]
        return kept, notes


def _latest_change_by_type(changes: list[asyncpg.Record]) -> dict[str, int]:
    latest: dict[str, int] = {}
    for change in changes:
        for res_type in concrete_types(change["base"]):
            latest[res_type] = max(latest.get(res_type, 0), change["generation"])
    return latest


async def _reindex(conn: Connection, res_type: str, res_ids: list[int], generation: int, catalog: Catalog,
                   plan: ReindexPlan) -> None:
    """Re-extract those of these resources still below the generation, in the caller's transaction."""
    rows = await conn.fetch(SELECT_LOCKED, res_ids, generation)
    if rows:
        await write_prepared(conn, res_type, await prepare_compared(conn, res_type, rows, catalog, plan), plan)
