"""Starting a reindex job: one transaction creates the job and plans its chunks, then workers are woken."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import orjson

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

DEFAULT_CHUNK_SIZE = 5000


@dataclass(frozen=True, slots=True)
class ReindexPlan:
    """What to reindex: explicit types, or every type that has resources (`types` empty)."""

    types: tuple[str, ...] = ()
    batch_size: int = 500
    force: bool = False  # re-extract rows already indexed at the current catalog generation

    def parameters(self) -> dict[str, Any]:
        return {"types": list(self.types), "allTypes": not self.types, "batchSize": self.batch_size,
                "force": self.force}


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
        job_id = await conn.fetchval(INSERT_JOB, uuid4(), parameters, fingerprint, generation, True,
                                     user_id, user_type)
        if job_id is None:
            return StartedJob(await conn.fetchval(SELECT_RUNNING_BY_FINGERPRINT, fingerprint), already_running=True)
        types = list(plan.types) or await resource_types(conn)
        if await plan_chunks(conn, job_id, types, chunk_size):
            await conn.execute(NOTIFY_JOBS, JOBS_CHANNEL, str(job_id))
        else:
            await end_empty_job(conn, job_id, covers)
    return StartedJob(job_id, already_running=False)
