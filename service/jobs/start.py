"""Starting a reindex job: one short transaction records it (planned later by a worker: jobs/planning.py),
so `POST $reindex` answers in constant time however many resources there are."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from uuid import UUID, uuid4

import asyncpg
import orjson
import structlog

from service.fhir.parameters import ReindexRequest
from service.jobs.filters import is_filtered
from service.jobs.planning import DEFAULT_CHUNK_SIZE
from service.jobs.repository import INSERT_JOB, JOBS_CHANNEL, NOTIFY_JOBS, SELECT_RUNNING_BY_FINGERPRINT, end_empty_job
from service.search.registry import concrete_types

log = structlog.get_logger(__name__)
# Whether there is anything to plan: one index probe per type, whatever the table size.
HAS_RESOURCES = "SELECT EXISTS (SELECT FROM resource)"
HAS_RESOURCES_OF = "SELECT EXISTS (SELECT FROM resource WHERE res_type = ANY($1::text[]))"
StorageMode = Literal["NONE", "CURRENT_VERSION", "ALL_VERSIONS"]


@dataclass(frozen=True, slots=True)
class ReindexPlan:
    """What to reindex: explicit types, or every type that has resources (`types` empty); `filters`
    limits a type to the resources matching any of its search query strings (see jobs/filters.py)."""

    types: tuple[str, ...] = ()
    batch_size: int = 500
    reindex_search_parameters: bool = True  # reindexSearchParameters=ALL: bring index rows up to date
    optimize_storage: StorageMode = "NONE"  # strip insignificant whitespace from stored bodies
    # Check what is current already: every resource in scope is re-extracted with all its parameters and
    # compared with the rows stored (not their fingerprint), rows that differ are rewritten; with storage,
    # every body is rewritten too. Counts are unaffected.
    force: bool = False
    # Compare every resource in scope with the rows stored, as force does, and write nothing: the differences
    # are the job's report (jobs/verify.py).
    verify: bool = False
    optimistic_lock: bool = True  # skip resources changed since the chunk read them
    filters: Mapping[str, list[str]] = field(default_factory=dict)
    base: str = ""  # the server's base URL, for references in filters

    @property
    def full_coverage(self) -> bool:
        return not is_filtered(self.filters)

    def parameters(self) -> dict[str, Any]:
        """The job row's `parameters` (jsonb); `from_parameters` reads them back."""
        return {"types": list(self.types), "allTypes": not self.types, "batchSize": self.batch_size,
                "reindexSearchParameters": "ALL" if self.reindex_search_parameters else "NONE",
                "optimizeStorage": self.optimize_storage, "force": self.force, "verify": self.verify,
                "optimisticLock": self.optimistic_lock,
                "filters": {res_type: list(queries) for res_type, queries in self.filters.items() if queries},
                "base": self.base}

    @classmethod
    def for_request(cls, request: ReindexRequest, filters: Mapping[str, list[str]], base: str) -> ReindexPlan:
        """The plan of a validated `$reindex` request whose `url`s became `filters` (jobs/filters.py)."""
        return cls(types=tuple(filters), batch_size=request.batch_size,
                   reindex_search_parameters=request.reindex_search_parameters == "ALL",
                   optimize_storage=request.optimize_storage, force=request.force, verify=request.verify,
                   optimistic_lock=request.optimistic_lock, filters=filters, base=base)

    @classmethod
    def from_parameters(cls, parameters: Mapping[str, Any]) -> ReindexPlan:
        return cls(types=tuple(parameters["types"]), batch_size=parameters["batchSize"],
                   reindex_search_parameters=parameters.get("reindexSearchParameters", "ALL") == "ALL",
                   optimize_storage=parameters.get("optimizeStorage", "NONE"), force=parameters["force"],
                   verify=parameters.get("verify", False), optimistic_lock=parameters["optimisticLock"],
                   filters=parameters["filters"], base=parameters["base"])


@dataclass(frozen=True, slots=True)
class StartedJob:
    job_id: UUID
    already_running: bool  # an identical job was running: this is its id


def covers(bases: list[str], parameters: dict[str, Any]) -> bool:
    """Whether a job with these parameters indexed every stored resource of these base types."""
    if parameters.get("reindexSearchParameters", "ALL") != "ALL" or parameters.get("verify"):
        return False  # a storage-only job leaves index rows as they were, a verification writes nothing
    return parameters["allTypes"] or set(concrete_types(bases)) <= set(parameters["types"])


async def start_reindex(pool: asyncpg.Pool, plan: ReindexPlan, generation: int, user_id: str | None = None,
                        user_type: str | None = None, chunk_size: int = DEFAULT_CHUNK_SIZE) -> StartedJob:
    """Record the job (an identical running one is shared) and wake the workers; a job over types that
    have no resource at all completes at once."""
    parameters = {**plan.parameters(), "chunkSize": chunk_size}
    fingerprint = hashlib.sha256(orjson.dumps(parameters, option=orjson.OPT_SORT_KEYS)).hexdigest()
    async with pool.acquire() as conn, conn.transaction():
        job_id = await conn.fetchval(INSERT_JOB, uuid4(), parameters, fingerprint, generation, plan.full_coverage,
                                     user_id, user_type)
        if job_id is None:
            return StartedJob(await conn.fetchval(SELECT_RUNNING_BY_FINGERPRINT, fingerprint), already_running=True)
        if plan.types:
            has_resources = await conn.fetchval(HAS_RESOURCES_OF, list(plan.types))
        else:
            has_resources = await conn.fetchval(HAS_RESOURCES)
        if has_resources:
            await conn.execute(NOTIFY_JOBS, JOBS_CHANNEL, str(job_id))
        else:
            await end_empty_job(conn, job_id, covers)
    log.info("job_started", job_id=str(job_id), types=list(plan.types) or "all", filtered=not plan.full_coverage,
             user_id=user_id)
    return StartedJob(job_id, already_running=False)
