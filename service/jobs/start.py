"""Starting a reindex job: one transaction creates the job and plans its chunks, then workers are woken."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import orjson
import structlog

from service.jobs.filters import is_filtered
from service.jobs.repository import (
    INSERT_JOB,
    JOBS_CHANNEL,
    NOTIFY_JOBS,
    SELECT_RUNNING_BY_FINGERPRINT,
    end_empty_job,
    plan_chunks,
    resource_types,
)
from service.search.registry import concrete_types

log = structlog.get_logger(__name__)
DEFAULT_CHUNK_SIZE = 5000


@dataclass(frozen=True, slots=True)
class ReindexPlan:
    """What to reindex: explicit types, or every type that has resources (`types` empty); `filters`
    limits a type to the resources matching any of its search query strings (see jobs/filters.py)."""

    types: tuple[str, ...] = ()
    batch_size: int = 500
    force: bool = False  # re-extract rows already indexed at the current catalog generation
    optimistic_lock: bool = True  # skip resources changed since the chunk read them
    filters: Mapping[str, list[str]] = field(default_factory=dict)
    base: str = ""  # the server's base URL, for references in filters

    @property
    def full_coverage(self) -> bool:
        return not is_filtered(self.filters)

    def parameters(self) -> dict[str, Any]:
        return {"types": list(self.types), "allTypes": not self.types, "batchSize": self.batch_size,
                "force": self.force, "optimisticLock": self.optimistic_lock,
                "filters": {res_type: list(queries) for res_type, queries in self.filters.items() if queries},
                "base": self.base}


@dataclass(frozen=True, slots=True)
class StartedJob:
    job_id: UUID
    already_running: bool  # an identical job was running: this is its id


def covers(bases: list[str], parameters: dict[str, Any]) -> bool:
    """Whether a job with these parameters indexed every stored resource of these base types."""
    return parameters["allTypes"] or set(concrete_types(bases)) <= set(parameters["types"])


async def start_reindex(pool: asyncpg.Pool, plan: ReindexPlan, generation: int, user_id: str | None = None,
                        user_type: str | None = None, chunk_size: int = DEFAULT_CHUNK_SIZE) -> StartedJob:
    parameters = plan.parameters()
    fingerprint = hashlib.sha256(orjson.dumps(parameters, option=orjson.OPT_SORT_KEYS)).hexdigest()
    async with pool.acquire() as conn, conn.transaction():
        job_id = await conn.fetchval(INSERT_JOB, uuid4(), parameters, fingerprint, generation, plan.full_coverage,
                                     user_id, user_type)
        if job_id is None:
            return StartedJob(await conn.fetchval(SELECT_RUNNING_BY_FINGERPRINT, fingerprint), already_running=True)
        types = list(plan.types) or await resource_types(conn)
        estimate = await plan_chunks(conn, job_id, types, chunk_size)
        if estimate:
            await conn.execute(NOTIFY_JOBS, JOBS_CHANNEL, str(job_id))
        else:
            await end_empty_job(conn, job_id, covers)
    log.info("job_started", job_id=str(job_id), types=types, resources=estimate, filtered=not plan.full_coverage,
             user_id=user_id)
    return StartedJob(job_id, already_running=False)
