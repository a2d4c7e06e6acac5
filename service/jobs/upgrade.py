"""The reindex an upgrade needs, started by the replicas themselves: when live resources were indexed by an
older extractor than this replica's (a release that changed extraction, or one that did not record it),
a `$reindex` of every type starts, which re-extracts them whole. No operator step is needed.

Each replica checks at start and with every upkeep round, so resources that replicas of the previous
release write during a rolling upgrade are caught by a later round. Replicas of an older release never
start one for resources of a newer extractor, so the two never undo each other's work."""

from __future__ import annotations

from uuid import UUID

import asyncpg
import structlog

from service.jobs.index_state import extractors_present
from service.jobs.start import ReindexPlan, start_reindex
from service.search.extractor import Extractor, is_stale
from service.search.extractor import current as current_extractor
from service.store.search_parameters import SELECT_GENERATION

log = structlog.get_logger(__name__)
STARTED_BY = "upgrade"


async def reindex_older_extractions(pool: asyncpg.Pool) -> UUID | None:
    """Start (or join, when an identical job runs) the reindex of every type when some live resource was
    indexed by an older extractor than this process's; returns the job, None when none is needed."""
    mine = current_extractor()
    async with pool.acquire() as conn:
        older = [found for found in await extractors_present(conn) if is_stale(found, mine)]
        generation = await conn.fetchval(SELECT_GENERATION)
    if not older:
        return None
    started = await start_reindex(pool, ReindexPlan(), generation, STARTED_BY, "SYSTEM")
    if not started.already_running:
        log.info("upgrade_reindex_started", job_id=str(started.job_id), extractor=str(mine),
                 older=[str(Extractor.of(found)) if found is not None else "not recorded" for found in older])
    return started.job_id
