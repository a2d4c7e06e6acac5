"""Retention: ended jobs, with their chunks, are deleted once they are older than the retention period."""

from __future__ import annotations

from service.db import Connection

# A few jobs per statement, so each transaction stays short however many chunks a job has. SKIP LOCKED: a
# replica running the same deletion at the same moment takes other jobs instead of waiting for these.
DELETE_EXPIRED_JOBS = """
WITH expired AS (
    SELECT id FROM job
    WHERE state IN ('completed', 'failed', 'cancelled') AND ended_at < now() - make_interval(days => $1)
    ORDER BY ended_at LIMIT $2 FOR UPDATE SKIP LOCKED
)
DELETE FROM job WHERE id IN (SELECT id FROM expired)"""
JOBS_PER_STATEMENT = 20


async def delete_expired_jobs(conn: Connection, retention_days: int) -> int:
    """Delete the jobs that ended more than `retention_days` ago (their chunks go with them); returns how many."""
    deleted = 0
    while True:
        status = await conn.execute(DELETE_EXPIRED_JOBS, retention_days, JOBS_PER_STATEMENT)
        count = int(status.split()[-1])
        deleted += count
        if count < JOBS_PER_STATEMENT:
            return deleted
