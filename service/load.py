"""`python -m service load FILE...`: bulk import of NDJSON (plain or gzip) through COPY."""

from __future__ import annotations

import gzip
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO
from uuid import uuid4

import asyncpg
import asyncpg.exceptions
import structlog

from service.db import open_database
from service.fhir.errors import FhirError
from service.fhir.resource import Submitted, check_id, check_resource, check_type, parse_resource
from service.search.catalog import Catalogs
from service.search.registry import Registry
from service.settings import Settings
from service.store.bulk import analyze_resources, write_batch
from service.store.search_parameters import refresh_catalog

log = structlog.get_logger(__name__)
_MAX_REPORTED_ERRORS = 20


@dataclass
class LoadStats:
    loaded: Counter[str] = field(default_factory=Counter)
    created: int = 0
    updated: int = 0
    invalid: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.loaded.values())


def ndjson_files(paths: list[str]) -> list[Path]:
    """The files named, with directories expanded to their `*.ndjson` and `*.ndjson.gz` files."""
    found: list[Path] = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            found.extend(sorted(p for p in path.iterdir() if p.name.endswith((".ndjson", ".ndjson.gz"))))
        elif path.is_file():
            found.append(path)
        else:
            raise FileNotFoundError(f"No such file or directory: {name}")
    return found


def read_resources(path: Path, stats: LoadStats) -> Iterator[Submitted]:
    """Valid resources of one file; invalid lines are recorded as `file:line: reason` and skipped."""
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rb") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                yield validated(parse_resource(line))
            except FhirError as exc:
                stats.invalid.append(f"{path}:{number}: {exc.diagnostics}")


def validated(submitted: Submitted) -> Submitted:
    """The checks of a create or update; a resource without an id gets a server-assigned one (the
    stored body gets it from the write, as every id)."""
    resource = submitted.values
    res_type = check_type(str(resource.get("resourceType") or ""))
    check_resource(resource, res_type)
    if resource.get("id") is None:
        resource["id"] = str(uuid4())
    check_id(str(resource["id"]))
    return submitted


def batches(resources: Iterator[Submitted], size: int) -> Iterator[list[Submitted]]:
    """Batches of at most `size`, never holding one (type, id) twice: a repeat starts a new batch."""
    batch: list[Submitted] = []
    keys: set[tuple[str, str]] = set()
    for resource in resources:
        key = (resource.values["resourceType"], resource.values["id"])
        if len(batch) >= size or key in keys:
            yield batch
            batch, keys = [], set()
        batch.append(resource)
        keys.add(key)
    if batch:
        yield batch


async def load_files(settings: Settings, paths: list[str], batch_size: int) -> int:
    """Load every file; return the process exit code (1 when any line was invalid)."""
    files = ndjson_files(paths)
    stats = LoadStats()
    progress = Progress(sys.stderr)
    started = time.perf_counter()
    catalogs = Catalogs(Registry.builtin())
    async with open_database(settings) as (pool, _schema), pool.acquire() as conn:
        await refresh_catalog(pool, catalogs)
        for path in files:
            for batch in batches(read_resources(path, stats), batch_size):
                if await _write_with_retry(conn, batch, catalogs, stats):
                    await refresh_catalog(pool, catalogs)  # later batches are indexed with them
                progress.show(stats.total, time.perf_counter() - started)
        # Fresh planner statistics: searches right after a large load would otherwise plan blind.
        await analyze_resources(conn)
    progress.done()
    _print_summary(stats, time.perf_counter() - started)
    return 1 if stats.invalid else 0


async def _write_with_retry(
    conn: asyncpg.Connection, batch: list[Submitted], catalogs: Catalogs, stats: LoadStats,
) -> bool:
    """Write one batch; True when it held SearchParameters."""
    try:
        result = await write_batch(conn, batch, catalogs)
    except asyncpg.exceptions.UniqueViolationError:
        # An API request created one of these ids between our lookup and the COPY: the retry sees it.
        result = await write_batch(conn, batch, catalogs)
    stats.created += result.created
    stats.updated += result.updated
    stats.invalid.extend(result.rejected)
    rejected = {line.partition(":")[0] for line in result.rejected}
    types_ids = ((r.values["resourceType"], r.values["id"]) for r in batch)
    stats.loaded.update(res_type for res_type, fhir_id in types_ids if f"{res_type}/{fhir_id}" not in rejected)
    return result.search_parameters > 0


class Progress:
    """A one-line progress display on a terminal; silent otherwise."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._enabled = stream.isatty()

    def show(self, count: int, elapsed: float) -> None:
        if self._enabled:
            self._stream.write(f"\r  loaded {count:>10,} resources  {count / max(elapsed, 1e-9):>10,.0f}/s")
            self._stream.flush()

    def done(self) -> None:
        if self._enabled:
            self._stream.write("\n")


def _print_summary(stats: LoadStats, elapsed: float) -> None:
    rate = stats.total / max(elapsed, 1e-9)
    print(f"Loaded {stats.total} resources ({stats.created} created, {stats.updated} updated) "
          f"in {elapsed:.2f} s: {rate:,.0f} resources/s")
    for res_type, count in sorted(stats.loaded.items()):
        print(f"  {res_type:<32} {count:>8}")
    if stats.invalid:
        print(f"{len(stats.invalid)} invalid lines skipped:")
        for line in stats.invalid[:_MAX_REPORTED_ERRORS]:
            print(f"  {line}")
    log.info("load_finished", resources=stats.total, invalid=len(stats.invalid), seconds=round(elapsed, 3))
