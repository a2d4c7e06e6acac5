"""A job's throttle: at most `throttle_rate` resources per second over every worker of every replica.

The job's row holds a token bucket that refills at the rate, up to half a second's worth. Before writing a
batch, a worker takes tokens for its resources in one statement on the job's row (which serialises the
takers, wherever they run); when the bucket holds fewer than it needs, it takes what there is and waits for
the rest. So the resources written in any span of T seconds are at most rate x (T + 0.5) plus the batches
being written at its start, however many workers share the job, and no sum of per-worker shares has to be
kept right as workers come and go. A worker waits at most half a second between takes: no token is lost
to a full bucket while anyone waits, and a new rate applies within half a second.

The bucket is a few numbers on a row updated once per batch (more often only while waiting), so an
unthrottled job pays nothing: a worker takes tokens only while its last checkpoint saw a rate."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from uuid import UUID

import asyncpg

from service.db import Connection

# The bucket's size in seconds of the rate, and the longest wait between two takes.
BURST_SECONDS = 0.5
# Available: what the bucket holds now, at most BURST_SECONDS of the rate ($3). Taken: as much as the
# worker asks for ($2), or what there is. Only a running job's bucket moves: a paused or cancelled one's
# worker stops instead.
TAKE_TOKENS = """
WITH bucket AS (
    SELECT state = 'in_progress' AS running, cancel_requested, paused_at IS NOT NULL AS paused, throttle_rate,
           clock_timestamp() AS at,
           least(throttle_rate * $3::float8, throttle_tokens + throttle_rate
                 * greatest(0, extract(epoch FROM clock_timestamp() - throttle_at))::float8) AS available
    FROM job WHERE id = $1 FOR NO KEY UPDATE
), taken AS (
    UPDATE job SET throttle_tokens = b.available - least(b.available, $2::float8), throttle_at = b.at
    FROM bucket b
    WHERE job.id = $1 AND b.throttle_rate IS NOT NULL AND b.running AND NOT b.paused AND NOT b.cancel_requested
)
SELECT running, cancel_requested, paused, throttle_rate, coalesce(least(available, $2::float8), $2::float8) AS taken
FROM bucket"""


async def pace(conn: Connection, job_id: UUID, rate: int | None, count: int,
               check: Callable[[asyncpg.Record | None], asyncpg.Record]) -> int | None:
    """Wait until the job's throttle lets `count` more resources through. `rate` is the job's rate as last
    seen (None: unthrottled, and nothing to wait for); `check` returns the job's row, or raises when it says
    the worker must stop (paused, cancelled, ended). Returns the job's rate now."""
    missing = float(count)
    while rate is not None:
        job = check(await conn.fetchrow(TAKE_TOKENS, job_id, missing, BURST_SECONDS))
        rate = job["throttle_rate"]
        missing -= job["taken"]
        if missing <= 0 or rate is None:
            break
        await asyncio.sleep(min(missing / rate, BURST_SECONDS))
    return rate
