"""`python -m service reindex [--url ...] [--wait]`: start a $reindex job from a shell, optionally
running workers in this process and showing progress until the job ends."""

from __future__ import annotations

import asyncio
import sys
from contextlib import suppress

import asyncpg

from service.db import open_database
from service.fhir.errors import FhirError
from service.fhir.parameters import parse_reindex_request
from service.jobs.filters import parse_filters
from service.jobs.repository import JobProgress, job_progress
from service.jobs.start import ReindexPlan, start_reindex
from service.jobs.worker import ReindexWorkers, WorkerSettings
from service.search.catalog import Catalogs
from service.search.registry import Registry
from service.settings import Settings
from service.store.search_parameters import refresh_catalog

ENDED = frozenset({"completed", "failed", "cancelled"})
VALUE_TYPES = {int: "valueInteger", str: "valueCode", bool: "valueBoolean"}


def request_body(urls: list[str], options: dict[str, object]) -> dict:
    """The same Parameters an HTTP client would send, so the command line gets the same validation;
    `options` maps parameter names to values (None: not given)."""
    parameters: list[dict] = [{"name": "url", "valueString": url} for url in urls]
    for name, value in options.items():
        if value is not None:
            parameters.append({"name": name, VALUE_TYPES[type(value)]: value})
    return {"resourceType": "Parameters", "parameter": parameters}


async def run_reindex(settings: Settings, urls: list[str], options: dict[str, object], wait: bool) -> int:
    """Start the job; with `wait`, work on it here until it ends. Returns the process exit code."""
    try:
        reindex = parse_reindex_request(request_body(urls, options))
    except FhirError as exc:
        print(f"error: {exc.diagnostics}", file=sys.stderr)
        return 2
    catalogs = Catalogs(Registry.builtin())
    async with open_database(settings) as database:
        pool = database.pool
        await refresh_catalog(pool, catalogs)
        base = settings.public_base_url or ""
        try:
            filters = parse_filters(catalogs.registry, base, reindex.searches)
        except FhirError as exc:
            print(f"error: {exc.diagnostics}", file=sys.stderr)
            return 2
        plan = ReindexPlan.for_request(reindex, filters, base)
        started = await start_reindex(pool, plan, catalogs.current.generation, "command-line", "SYSTEM")
        print(f"job {started.job_id}" + (" (an identical job was already running)" if started.already_running else ""))
        if not wait:
            return 0
        progress = await _work_until_ended(pool, catalogs, settings, started.job_id)
    print(progress.report or progress.error or progress.state)
    return 0 if progress.state == "completed" else 1


async def _work_until_ended(pool: asyncpg.Pool, catalogs: Catalogs, settings: Settings, job_id) -> JobProgress:
    workers = asyncio.create_task(ReindexWorkers(pool, catalogs, WorkerSettings(max(settings.reindex_workers, 1),
                                                                                settings.reindex_lease_seconds,
                                                                                settings.reindex_poll_seconds)).run())
    try:
        while True:
            progress = await job_progress(pool, job_id)
            assert progress is not None
            _show(progress)
            if progress.state in ENDED:
                return progress
            await asyncio.sleep(0.5)
    finally:
        workers.cancel()
        with suppress(asyncio.CancelledError):
            await workers


def _show(progress: JobProgress) -> None:
    if sys.stderr.isatty():
        percent = 100 * progress.processed // progress.total if progress.total else 0
        sys.stderr.write(f"\r  {progress.state:<12} {progress.processed:>10,} of {progress.total:,} ({percent}%)")
        sys.stderr.write("\n" if progress.state in ENDED else "")
        sys.stderr.flush()
