"""Pausing, resuming and throttling a job that has not ended: `POST [base]/$hapi.fhir.reindex-status?_jobId=
...&_action=pause|resume|throttle[&rate=N]` and `python -m service reindex --pause/--resume/--throttle`.

Each is one short transaction on the job's row, answered at once; the workers act on it on their own:
no worker claims a paused job's chunks, and a worker holding one hands it back (its checkpoint kept, not
counted as an attempt) at its next batch, throttle wait or heartbeat. Resuming wakes every replica's idle
workers. A new rate applies at each worker's next batch (jobs/throttle.py). An ended job is left as it is."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal
from uuid import UUID

from service.db import Connection
from service.fhir.errors import invalid
from service.fhir.parameters import MAX_THROTTLE
from service.jobs.repository import JOBS_CHANNEL, NOTIFY_JOBS
from service.jobs.status import RUNNING_STATES, JobState

JobAction = Literal["pause", "resume", "throttle"]
ACTIONS: tuple[JobAction, ...] = ("pause", "resume", "throttle")
QUERY_PARAMETERS = ("_action", "_jobId", "rate")

LOCK_JOB = "SELECT state, paused_at IS NOT NULL AS paused, throttle_rate FROM job WHERE id = $1 FOR NO KEY UPDATE"
PAUSE_JOB = "UPDATE job SET paused_at = coalesce(paused_at, now()) WHERE id = $1"
# The pause's share of the time since the job started is left out of its rate (a job paused while queued
# started later, or not yet).
RESUME_JOB = """
UPDATE job SET paused_at = NULL, paused_seconds = paused_seconds
                   + greatest(0, extract(epoch FROM now() - greatest(paused_at, coalesce(started_at, now()))))
WHERE id = $1 AND paused_at IS NOT NULL"""
# An empty bucket: the new rate starts from nothing, whatever the old one had saved up.
THROTTLE_JOB = "UPDATE job SET throttle_rate = $2, throttle_tokens = 0, throttle_at = now() WHERE id = $1"


@dataclass(frozen=True, slots=True)
class JobControl:
    action: JobAction
    rate: int | None = None  # throttle: resources per second over all workers; None: unthrottled


@dataclass(frozen=True, slots=True)
class ControlledJob:
    """The job as it was before the control was applied."""

    state: JobState
    paused: bool
    throttle_rate: int | None

    @property
    def ended(self) -> bool:
        return self.state not in RUNNING_STATES


def parse_control(query: Iterable[tuple[str, str]]) -> JobControl:
    """The control a `POST` on the status URL asks for, from its query parameters; a 400 for an unknown or
    repeated parameter, a missing or unknown `_action`, or a `rate` that is not for `_action=throttle`."""
    values: dict[str, str] = {}
    for name, value in query:
        if name not in QUERY_PARAMETERS:
            raise invalid(f"Unknown parameter '{name}' for this operation; known: {', '.join(QUERY_PARAMETERS)}")
        if name in values:
            raise invalid(f"Parameter '{name}' may appear at most once")
        values[name] = value
    action = next((known for known in ACTIONS if known == values.get("_action")), None)
    if action is None:
        raise invalid(f"The _action parameter is required, one of: {', '.join(ACTIONS)}")
    if action != "throttle":
        if "rate" in values:
            raise invalid("The rate parameter goes with _action=throttle only")
        return JobControl(action)
    return JobControl(action, parse_rate(values.get("rate", "")))


def parse_rate(text: str) -> int | None:
    """A throttle rate in resources per second; 0 or nothing means unthrottled (None)."""
    text = text.strip()
    if not text:
        return None
    if not (text.isascii() and text.isdigit()) or int(text) > MAX_THROTTLE:
        raise invalid(f"The rate must be a whole number of resources per second from 0 (unthrottled) to "
                      f"{MAX_THROTTLE}, not {text!r}")
    return int(text) or None


async def control_job(conn: Connection, job_id: UUID, control: JobControl) -> ControlledJob | None:
    """Apply the control unless the job has ended; returns the job as it was (None: no such job)."""
    async with conn.transaction():
        row = await conn.fetchrow(LOCK_JOB, job_id)
        if row is None:
            return None
        before = ControlledJob(row["state"], row["paused"], row["throttle_rate"])
        if before.ended:
            return before
        if control.action == "pause":
            await conn.execute(PAUSE_JOB, job_id)
        elif control.action == "resume":
            await conn.execute(RESUME_JOB, job_id)
            await conn.execute(NOTIFY_JOBS, JOBS_CHANNEL, str(job_id))  # idle workers claim its chunks now
        else:
            await conn.execute(THROTTLE_JOB, job_id, control.rate)
    return before
