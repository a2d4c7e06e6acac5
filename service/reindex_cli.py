"""`python -m service reindex [--url ...] [--wait]`: start a $reindex job from a shell, optionally
running workers in this process and showing progress until the job ends; `--cancel JOB_ID` cancels one, and
`--pause`, `--resume` and `--throttle` control one."""

from __future__ import annotations

import asyncio
import shlex
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg

from service.collector import collect_rarely
from service.console import INTERRUPTED_EXIT, StatusLine, format_duration, format_rate
from service.db import open_database
from service.fhir.errors import FhirError
from service.fhir.parameters import ReindexRequest, parse_reindex_request
from service.jobs.control import ControlledJob, JobAction, JobControl, parse_rate
from service.jobs.control import control_job as apply_control
from service.jobs.filters import parse_filters
from service.jobs.repository import JobProgress, job_progress, request_cancel
from service.jobs.start import ReindexPlan, start_reindex
from service.jobs.status import RUNNING_STATES, JobStatus, job_status
from service.jobs.verify import differing_resources
from service.jobs.worker import ReindexWorkers, WorkerSettings
from service.search.catalog import Catalogs
from service.search.registry import Registry
from service.settings import Settings
from service.store.search_parameters import refresh_catalog

ENDED = frozenset({"completed", "failed", "cancelled"})
VALUE_TYPES = {int: "valueInteger", str: "valueCode", bool: "valueBoolean"}
POLL_SECONDS = 0.5


@dataclass(frozen=True, slots=True)
class Waiting:
    """How `--wait` behaves: where its progress line goes, and whether Ctrl-C cancels the job."""

    status: StatusLine
    cancel_on_interrupt: bool = False


def request_body(urls: list[str], options: dict[str, object]) -> dict[str, Any]:
    """The same Parameters an HTTP client would send, so the command line gets the same validation;
    `options` maps parameter names to values (None: not given)."""
    parameters: list[dict[str, Any]] = [{"name": "url", "valueString": url} for url in urls]
    for name, value in options.items():
        if value is not None:
            parameters.append({"name": name, VALUE_TYPES[type(value)]: value})
    return {"resourceType": "Parameters", "parameter": parameters}


async def run_reindex(settings: Settings, urls: list[str], options: dict[str, object],
                      waiting: Waiting | None) -> int:
    """Start the job; with `waiting`, work on it here until it ends. Returns the process exit code."""
    try:
        reindex = parse_reindex_request(request_body(urls, options))
        async with open_database(settings) as database:
            pool = database.pool
            catalogs = Catalogs(Registry.builtin(settings.local_bases))
            await refresh_catalog(pool, catalogs)
            job_id = await _start(pool, catalogs, settings, reindex)
            if waiting is None:
                return 0
            code = await _wait(pool, catalogs, settings, job_id, waiting)
            # A verification that found differences is a failed check, for scripts run after a restore.
            return 1 if code == 0 and reindex.verify and await differing_resources(pool, job_id) else code
    except FhirError as exc:
        print(f"error: {exc.diagnostics}", file=sys.stderr)
        return 2


async def cancel_job(settings: Settings, raw_job_id: str) -> int:
    """`--cancel JOB_ID`: what `DELETE $hapi.fhir.reindex-status?_jobId=` does. Exit code 0 when the
    cancel was requested, 1 when the job had already ended, 2 for an unknown job."""
    job_id = _job_id(raw_job_id)
    if job_id is None:
        return 2
    async with open_database(settings) as database:
        pool = database.pool
        message, code = await _cancel(pool, job_id)
    print(message, file=sys.stderr if code == 2 else sys.stdout)
    return code


async def control_job(settings: Settings, raw_job_id: str, action: JobAction, raw_rate: str = "") -> int:
    """`--pause`, `--resume`, `--throttle JOB_ID RATE`: what a POST on the status URL with that `_action`
    does. Exit code 0 when done, 1 when the job had already ended, 2 for an unknown job or a bad rate."""
    job_id = _job_id(raw_job_id)
    if job_id is None:
        return 2
    try:
        control = JobControl(action, parse_rate(raw_rate) if action == "throttle" else None)
    except FhirError as exc:
        print(f"error: {exc.diagnostics}", file=sys.stderr)
        return 2
    async with open_database(settings) as database, database.pool.acquire() as conn:
        before = await apply_control(conn, job_id, control)
    if before is None:
        print(f"error: unknown job {job_id}", file=sys.stderr)
        return 2
    print(control_message(job_id, control, before))
    return 1 if before.ended else 0


def control_message(job_id: UUID, control: JobControl, before: ControlledJob) -> str:
    if before.ended:
        done = {"pause": "paused", "resume": "resumed", "throttle": "throttled"}[control.action]
        return f"Job {job_id} had already ended as {before.state}; it was not {done}."
    if control.action == "pause":
        return (f"Job {job_id} was paused already." if before.paused else
                f"Job {job_id} is paused: the workers holding its chunks hand them back after their current batch.")
    if control.action == "resume":
        return f"Job {job_id} is resumed." if before.paused else f"Job {job_id} was not paused."
    if control.rate is None:
        return f"Job {job_id} is not throttled."
    return f"Job {job_id} is throttled to {control.rate} resources per second over all workers."


def _job_id(raw: str) -> UUID | None:
    try:
        return UUID(raw)
    except ValueError:
        print(f"error: not a job id: {raw}", file=sys.stderr)
        return None


def progress_line(status: JobStatus) -> str:
    """State, percentage, processed of total, rate and time left: the figures of the `X-Progress` header."""
    paused = status.paused and status.state in RUNNING_STATES
    parts = [f"{'paused' if paused else status.state.replace('_', ' '):<11}", f"{status.percent:>3}%",
             f"{status.processed:,} of {status.total or 0:,}"]
    # An ended job's rate would count the time since it ended; its report gives the true one.
    if status.state in RUNNING_STATES and not paused and status.rate is not None and status.seconds_left is not None:
        parts += [format_rate(status.rate), f"ETA {format_duration(status.seconds_left)}"]
    return "  " + "  ".join(parts)


def cancel_command(job_id: UUID) -> str:
    """The command that cancels the job, started as this process was (the same Python, or the console script)."""
    if Path(sys.argv[0]).name == "__main__.py":
        prefix = [sys.orig_argv[0], "-m", "service"]
    else:
        prefix = [sys.argv[0]]
    return shlex.join([*prefix, "reindex", "--cancel", str(job_id)])


async def _start(pool: asyncpg.Pool, catalogs: Catalogs, settings: Settings, reindex: ReindexRequest) -> UUID:
    base = settings.public_base_url or ""
    filters = parse_filters(catalogs.registry, base, reindex.searches)
    plan = ReindexPlan.for_request(reindex, filters, base)
    started = await start_reindex(pool, plan, catalogs.current.generation, "command-line", "SYSTEM",
                                  throttle=reindex.throttle or None)
    shared = " (an identical job was already running)" if started.already_running else ""
    print(f"job {started.job_id}{shared}", flush=True)  # flushed: a script may read the id while we wait
    return started.job_id


async def _wait(pool: asyncpg.Pool, catalogs: Catalogs, settings: Settings, job_id: UUID, waiting: Waiting) -> int:
    interrupted = asyncio.Event()
    loop = asyncio.get_running_loop()
    # Ctrl-C only sets the flag: the workers hand their chunks back, and the operator learns what became of the job.
    loop.add_signal_handler(signal.SIGINT, interrupted.set)
    try:
        async with _workers(pool, catalogs, settings):
            progress = await _follow(pool, job_id, waiting.status, interrupted)
        waiting.status.finish()
        if progress is None:
            await _tell_interrupted(pool, job_id, waiting.cancel_on_interrupt)
            return INTERRUPTED_EXIT
    finally:
        loop.remove_signal_handler(signal.SIGINT)
    print(progress.report or progress.error or progress.state)
    return 0 if progress.state == "completed" else 1


@asynccontextmanager
async def _workers(pool: asyncpg.Pool, catalogs: Catalogs, settings: Settings) -> AsyncIterator[None]:
    """Reindex workers in this process; on exit they stop and release their chunks to other workers."""
    worker_settings = WorkerSettings(max(settings.reindex_workers, 1), settings.reindex_lease_seconds,
                                     settings.reindex_poll_seconds)
    collect_rarely()
    workers = asyncio.create_task(ReindexWorkers(pool, catalogs, worker_settings).run())
    try:
        yield
    finally:
        workers.cancel()
        with suppress(asyncio.CancelledError):
            await workers


async def _follow(pool: asyncpg.Pool, job_id: UUID, status: StatusLine,
                  interrupted: asyncio.Event) -> JobProgress | None:
    """Show the job's progress until it ends (its final progress) or Ctrl-C is pressed (None)."""
    while not interrupted.is_set():
        progress = await job_progress(pool, job_id)
        assert progress is not None, "a job is deleted only long after it ended"
        status.show(progress_line(job_status(progress)))
        if progress.state in ENDED:
            return progress
        with suppress(TimeoutError):
            async with asyncio.timeout(POLL_SECONDS):
                await interrupted.wait()
    return None


async def _tell_interrupted(pool: asyncpg.Pool, job_id: UUID, cancel: bool) -> None:
    if cancel:
        message, _code = await _cancel(pool, job_id)
        print(f"Interrupted. {message}", file=sys.stderr)
        return
    print(f"Interrupted. Job {job_id} continues: the reindex workers of the service (any replica) resume it, "
          "or run this command again to work on it here.", file=sys.stderr)
    print(f"To cancel it: {cancel_command(job_id)}", file=sys.stderr)


async def _cancel(pool: asyncpg.Pool, job_id: UUID) -> tuple[str, int]:
    """Cancel as the HTTP DELETE does; returns what happened and the exit code."""
    async with pool.acquire() as conn:
        was_running = await request_cancel(conn, job_id) is not None
    progress = await job_progress(pool, job_id)
    if progress is None:
        return f"error: unknown job {job_id}", 2
    if not was_running:
        return f"Job {job_id} had already ended as {progress.state}; it was not cancelled.", 1
    if progress.state == "cancelled":
        return f"Job {job_id} is cancelled.", 0
    return (f"Cancellation of job {job_id} requested: the workers holding its chunks stop after their "
            "current batch."), 0
