"""Poison resources: a batch whose write PostgreSQL refuses because of one resource's data (a constraint,
a value out of range, an index row too large) is written again in halves, each under its own savepoint,
until the refused resources are alone. Each becomes a failure in the job's report, with the SQLSTATE and
message; the rest of the batch is written as usual, in the same transaction as its checkpoint."""

from __future__ import annotations

from service.db import Connection
from service.jobs.errors import RESOURCE_ERRORS, describe
from service.jobs.reindex_batch import BatchOutcome, PreparedBatch, batch_outcome, write_prepared
from service.jobs.start import ReindexPlan


async def write_isolating(conn: Connection, res_type: str, batch: PreparedBatch, plan: ReindexPlan) -> BatchOutcome:
    """Write the batch inside the caller's transaction; a resource error costs only the resources it is about."""
    try:
        async with conn.transaction():  # a savepoint: a refusal undoes this part only
            return await write_prepared(conn, res_type, batch, plan)
    except RESOURCE_ERRORS as error:
        if len(batch.rows) == 1:
            return batch_outcome(res_type, batch.rows, set(), {batch.rows[0]["res_id"]: describe(error)})
        first, second = batch.halves()
        return _merged(await write_isolating(conn, res_type, first, plan),
                       await write_isolating(conn, res_type, second, plan))


def _merged(first: BatchOutcome, second: BatchOutcome) -> BatchOutcome:
    return BatchOutcome(max(first.last_res_id, second.last_res_id), first.changed + second.changed,
                        first.unchanged + second.unchanged, first.failures + second.failures)
