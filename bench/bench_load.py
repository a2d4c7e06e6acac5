"""`load` against a fair baseline, at a size from the flags, with the loader's peak memory.

    .venv/bin/python -m bench.bench_load [--resources N] [--kind organization|synthea] [--batch-size B]

The data is written to an NDJSON file first: generated Organizations (bench/generate.py), or the Synthea
files of tests/data repeated under fresh ids until N. Then, each in a scratch database of its own:
- `load`: `python -m service load FILE` in a subprocess, its wall time, its CPU time (user + system: what the
  loader's own work costs, which other processes on the machine barely move) and its peak RSS;
- the baseline: the same lines parsed with orjson, each body COPYed into `resource` and `resource_version`,
  and as many rows COPYed into each index table as `load` wrote there (rows of the real load's shapes,
  given the baseline's res_ids: extraction that costs nothing), in transactions of the same batch size.
The ratio load/baseline is printed; run it at two sizes to see whether cost per resource stays flat. Blocks
per resource (pg_stat_database of each run's database: found in shared buffers, or read from outside them)
show the database's side of that cost, which the wall times of a busy machine blur.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import itertools
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import DATA_DIR, scratch_database  # noqa: E402
from bench.generate import batches  # noqa: E402
from service.event_loop import run as run_loop  # noqa: E402
from service.store.bulk import RESOURCE_COPY_COLUMNS, VERSION_COPY_COLUMNS  # noqa: E402
from service.store.indexes import TABLE_COLUMNS  # noqa: E402


def write_source(path: Path, kind: str, count: int) -> None:
    with path.open("wb") as out:
        for line in itertools.islice(_lines(kind, count), count):
            out.write(line + b"\n")


def _lines(kind: str, count: int) -> Iterator[bytes]:
    if kind == "organization":
        for batch in batches("Organization", count, 5000):
            yield from map(orjson.dumps, batch)
        return
    files = sorted((DATA_DIR / "synthea-r4-2019").glob("*.ndjson.gz"))
    for copy in itertools.count():
        for file in files:
            with gzip.open(file, "rb") as handle:
                for line in handle:
                    item = orjson.loads(line)
                    item["id"] = f"{item['id'][:40]}-{copy}"
                    yield orjson.dumps(item)


def service_load(database_url: str, source: Path, batch_size: int) -> tuple[float, float, int]:
    """Seconds, CPU seconds and peak RSS (KiB) of `python -m service load`."""
    environment = {"DATABASE_URL": database_url, "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                   "FHIR_LOG_LEVEL": "WARNING"}
    with tempfile.TemporaryFile() as errors:
        started = time.perf_counter()
        process = subprocess.Popen([sys.executable, "-m", "service", "load", "--batch-size", str(batch_size),
                                    str(source)], env=environment, stdout=subprocess.DEVNULL, stderr=errors)
        _pid, status, usage = os.wait4(process.pid, 0)  # the child's own resource usage, its peak RSS
        elapsed = time.perf_counter() - started
        if os.waitstatus_to_exitcode(status) != 0:
            errors.seek(0)
            raise RuntimeError(f"load failed: {errors.read().decode(errors='replace')}")
    return elapsed, usage.ru_utime + usage.ru_stime, usage.ru_maxrss


async def blocks(database_url: str) -> tuple[int, int]:
    """Blocks the run's database found in shared buffers and read from outside them (autovacuum's included)."""
    conn = await asyncpg.connect(database_url)
    try:
        row = await conn.fetchrow("SELECT blks_hit, blks_read FROM pg_stat_database WHERE datname = current_database()")
        return row["blks_hit"], row["blks_read"]
    finally:
        await conn.close()


def blocks_line(counts: tuple[int, int], resources: int) -> str:
    return f"{counts[0] / resources:.0f} blocks hit, {counts[1] / resources:.1f} read per resource"


async def index_shapes(database_url: str, resources: int) -> dict[str, tuple[float, list[tuple[object, ...]]]]:
    """Per index table: rows per resource that `load` wrote, and sample rows of the real shapes."""
    conn = await asyncpg.connect(database_url)
    try:
        shapes = {}
        for table, columns in TABLE_COLUMNS.items():
            count = await conn.fetchval(f"SELECT count(*) FROM {table}")
            # One row per code first: a resource's rows take the first ones, so it has no code twice where
            # a key forbids it (idx_missing).
            wanted = ", ".join(columns[1:])
            sample = await conn.fetch(f"(SELECT DISTINCT ON (sp_hash) {wanted} FROM {table}) "
                                      f"UNION ALL (SELECT {wanted} FROM {table} LIMIT 1000)")
            shapes[table] = (count / resources, [tuple(row) for row in sample])
        return shapes
    finally:
        await conn.close()


async def baseline_load(database_url: str, source: Path, batch_size: int,
                        shapes: dict[str, tuple[float, list[tuple[object, ...]]]]) -> float:
    """Seconds to parse and COPY the same bodies and as many index rows (see the module's docstring)."""
    subprocess.run([sys.executable, "-m", "service", "migrate"], env={**os.environ, "DATABASE_URL": database_url,
                   "FHIR_LOG_LEVEL": "WARNING"}, check=True, stdout=subprocess.DEVNULL)
    conn = await asyncpg.connect(database_url)
    try:
        started = time.perf_counter()
        next_id = itertools.count(1)
        owed = dict.fromkeys(shapes, 0.0)
        with source.open("rb") as handle:
            while lines := list(itertools.islice(handle, batch_size)):
                await _baseline_batch(conn, lines, next_id, shapes, owed)
        return time.perf_counter() - started
    finally:
        await conn.close()


async def _baseline_batch(conn: asyncpg.Connection, lines: list[bytes], next_id: Iterator[int],
                          shapes: dict[str, tuple[float, list[tuple[object, ...]]]], owed: dict[str, float]) -> None:
    now = datetime.now(UTC)
    resources, versions = [], []
    for line in lines:
        item = orjson.loads(line)
        res_id, body = next(next_id), orjson.dumps(item)
        resources.append((res_id, item["resourceType"], item["id"], 1, now, False, body, 0, 0, 0))
        versions.append((res_id, item["resourceType"], item["id"], 1, now, False, "PUT", body))
    async with conn.transaction():
        await conn.copy_records_to_table("resource", records=resources, columns=RESOURCE_COPY_COLUMNS)
        await conn.copy_records_to_table("resource_version", records=versions, columns=VERSION_COPY_COLUMNS)
        for table, (per_resource, sample) in shapes.items():
            owed[table] += per_resource * len(resources)
            count, owed[table] = int(owed[table]), owed[table] - int(owed[table])
            if count and sample:
                rows = [(resources[k % len(resources)][0], *sample[k // len(resources) % len(sample)])
                        for k in range(count)]
                await conn.copy_records_to_table(table, records=rows, columns=TABLE_COLUMNS[table])


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resources", type=int, default=100_000)
    parser.add_argument("--kind", choices=("organization", "synthea"), default="organization")
    parser.add_argument("--batch-size", type=int, default=5000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp:
        source = Path(tmp) / f"{args.kind}.ndjson"
        write_source(source, args.kind, args.resources)
        async with scratch_database() as database_url:
            seconds, cpu, peak_kib = await asyncio.to_thread(service_load, database_url, source, args.batch_size)
            load_blocks = await blocks(database_url)  # before index_shapes reads the tables
            shapes = await index_shapes(database_url, args.resources)
        async with scratch_database() as database_url:
            baseline = await baseline_load(database_url, source, args.batch_size, shapes)
            baseline_blocks = await blocks(database_url)
    rows = sum(per_resource for per_resource, _sample in shapes.values())
    print(f"{args.kind}: {args.resources:,} resources, {rows:.1f} index rows each, batches of {args.batch_size}")
    print(f"  load      {args.resources / seconds:10,.0f} resources/s  ({seconds:.1f} s, loader CPU {cpu:.1f} s = "
          f"{cpu / args.resources * 1e6:.0f} µs/resource, peak RSS {peak_kib / 1024:.0f} MiB)")
    print(f"  baseline  {args.resources / baseline:10,.0f} resources/s  ({baseline:.1f} s: parse + COPY of the "
          "bodies and as many index rows)")
    print(f"  ratio     {baseline / seconds:10.2f}")
    print(f"  database  load: {blocks_line(load_blocks, args.resources)}; "
          f"baseline: {blocks_line(baseline_blocks, args.resources)}")
    print(f"  (this process's own peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB)")


if __name__ == "__main__":
    run_loop(main())
