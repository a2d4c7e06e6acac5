"""`python -m service load FILE_OR_DIR...`: bulk import of NDJSON and Bundle JSON files (plain or gzip)
through COPY."""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import asyncpg
import asyncpg.exceptions
import structlog

from service.collector import collect_rarely
from service.console import StatusLine, format_rate
from service.db import Connection, open_database
from service.fhir.resource import Submitted
from service.load_sources import Located, UnreadableSource, read_resources, source_files
from service.pools import Pool
from service.search.catalog import Catalogs
from service.search.registry import Registry
from service.settings import Settings
from service.store.bulk import BatchResult, analyze_resources, write_batch
from service.store.resources import SEARCH_PARAMETER
from service.store.search_parameters import refresh_catalog

log = structlog.get_logger(__name__)
RETRIED_ERRORS = (asyncpg.exceptions.UniqueViolationError, asyncpg.exceptions.DeadlockDetectedError)
MAX_ATTEMPTS = 5
RETRY_DELAY_SECONDS = 0.1


@dataclass
class LoadStats:
    """Counts so far; every problem is written at once, as one line, to `problems`."""

    problems: StatusLine
    loaded: Counter[str] = field(default_factory=Counter)
    created: int = 0
    updated: int = 0
    invalid: int = 0

    @property
    def total(self) -> int:
        return sum(self.loaded.values())

    def report(self, problem: str) -> None:
        self.invalid += 1
        self.problems.write(problem + "\n")


def batches(resources: Iterator[Located], size: int) -> Iterator[list[Located]]:
    """Batches of at most `size`, never holding one (type, id) twice: a repeat starts a new batch."""
    batch: list[Located] = []
    keys: set[tuple[str, str]] = set()
    for located in resources:
        resource = located[1].values
        key = (resource["resourceType"], resource["id"])
        if len(batch) >= size or key in keys:
            yield batch
            batch, keys = [], set()
        batch.append(located)
        keys.add(key)
    if batch:
        yield batch


async def load_files(settings: Settings, paths: list[str], batch_size: int, status: StatusLine) -> int:
    """Load every file; return the process exit code: 1 when anything was invalid, 2 when a path is
    missing or a file cannot be read (what earlier batches wrote stays)."""
    stats = LoadStats(status)
    started = time.perf_counter()
    try:
        files = source_files(paths)
        async with (open_database(settings) as database, database.pool.acquire() as first,
                    database.pool.acquire() as second):
            catalogs = Catalogs(Registry.builtin(settings.local_bases))
            await refresh_catalog(database.pool, catalogs)
            collect_rarely()
            writer = BatchWriter(database.pool, (first, second), catalogs, stats,
                                 lambda: status.show(_progress_text(stats.total, time.perf_counter() - started)))
            try:
                for path in files:
                    for batch in batches(read_resources(path, stats.report), batch_size):
                        await writer.submit(batch)
            finally:
                await writer.drain()
            # Fresh planner statistics: searches right after a large load would otherwise plan blind.
            await analyze_resources(first)
    except UnreadableSource as exc:
        status.finish()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    status.finish()
    _print_summary(stats, time.perf_counter() - started)
    return 1 if stats.invalid else 0


# A batch being written: its resources, their (type, id) keys, its connection and the task writing it.
_InFlight = tuple[list[Located], set[tuple[str, str]], Connection, "asyncio.Task[BatchResult]"]


class BatchWriter:
    """Writes batches in order, two at a time on two connections: while PostgreSQL writes one, this process
    parses, validates and indexes the next (otherwise the two take turns and each waits half the time).
    A batch that holds a resource of a batch in flight (a later version of it) waits until that one has
    committed. A batch holding SearchParameters is written alone, and the catalog refreshed before the next
    batch is indexed."""

    def __init__(self, pool: Pool, connections: tuple[Connection, ...], catalogs: Catalogs, stats: LoadStats,
                 written: Callable[[], None]) -> None:
        self._pool = pool
        self._idle = list(connections)
        self._catalogs = catalogs
        self._stats = stats
        self._written = written
        self._pending: deque[_InFlight] = deque()

    async def submit(self, batch: list[Located]) -> None:
        keys = {(resource.values["resourceType"], resource.values["id"]) for _where, resource in batch}
        holds_parameters = any(res_type == SEARCH_PARAMETER for res_type, _id in keys)
        if holds_parameters or any(keys & pending_keys for _batch, pending_keys, _conn, _task in self._pending):
            await self.drain()  # a resource again (a later version): the earlier batch commits first
        elif not self._idle:
            await self._complete_oldest()
        conn = self._idle.pop()
        task = asyncio.create_task(_write_batch(conn, [resource for _where, resource in batch], self._catalogs))
        self._pending.append((batch, keys, conn, task))
        if holds_parameters:
            await self.drain()
            await refresh_catalog(self._pool, self._catalogs)  # later batches are indexed with them

    async def drain(self) -> None:
        """Wait for every batch in flight; after a failure, cancel the others (their transactions roll back)."""
        try:
            while self._pending:
                await self._complete_oldest()
        except BaseException:
            for _batch, _keys, _conn, task in self._pending:
                task.cancel()
            await asyncio.gather(*(task for _batch, _keys, _conn, task in self._pending), return_exceptions=True)
            self._pending.clear()
            raise

    async def _complete_oldest(self) -> None:
        batch, _keys, conn, task = self._pending.popleft()
        try:
            result = await task
        finally:
            self._idle.append(conn)
        _count_batch(batch, result, self._stats)
        self._written()


def _count_batch(batch: list[Located], result: BatchResult, stats: LoadStats) -> None:
    """Count a written batch; its rejections (`Type/id: reason`) are reported with where each came from."""
    stats.created += result.created
    stats.updated += result.updated
    keys = [(place, f"{r.values['resourceType']}/{r.values['id']}", r.values["resourceType"]) for place, r in batch]
    where = {key: place for place, key, _type in keys}
    rejected = set()
    for line in result.rejected:
        key = line.partition(":")[0]
        rejected.add(key)
        stats.report(f"{where[key]}: {line}")
    stats.loaded.update(res_type for _place, key, res_type in keys if key not in rejected)


async def _write_batch(conn: Connection, resources: list[Submitted], catalogs: Catalogs) -> BatchResult:
    """One batch's transaction, written again when it lost to a concurrent writer (it was rolled back whole):
    an API request created one of its ids between the lookup and the COPY (the retry sees it), or a job or
    request locked its rows in another order (a deadlock: PostgreSQL aborts one of the two)."""
    attempt = 1
    while True:
        try:
            return await write_batch(conn, resources, catalogs)
        except RETRIED_ERRORS as exc:
            if attempt == MAX_ATTEMPTS:
                raise
            log.warning("load_batch_retried", error=type(exc).__name__, attempt=attempt, resources=len(resources))
        await asyncio.sleep(RETRY_DELAY_SECONDS * attempt)
        attempt += 1


def _progress_text(count: int, elapsed: float) -> str:
    return f"  loaded {count:>10,} resources  {format_rate(count / max(elapsed, 1e-9)):>10}"


def _print_summary(stats: LoadStats, elapsed: float) -> None:
    rate = stats.total / max(elapsed, 1e-9)
    print(f"Loaded {stats.total} resources ({stats.created} created, {stats.updated} updated) "
          f"in {elapsed:.2f} s: {rate:,.0f} resources/s")
    for res_type, count in sorted(stats.loaded.items()):
        print(f"  {res_type:<32} {count:>8}")
    if stats.invalid:
        print(f"{stats.invalid} invalid resources skipped (each is a line on stderr)")
    log.info("load_finished", resources=stats.total, invalid=stats.invalid, seconds=round(elapsed, 3))
