"""$reindex throughput, memory and probe latency, against a raw baseline measured in the same run and database.

    python bench/bench_reindex.py [--organizations N] [--observations M] [--batch-size B] [--small S]
                                  [--scenarios new param,forced,unknown,rebuild] [--no-http]
                                  [--workers W] [--http-job rebuild|"new param"] [--keep DBNAME | --reuse DBNAME]

1. Generates Organizations and Observations (bench/generate.py) and bulk-loads them with their index rows
   (`--keep` into a database of that name that it keeps; `--reuse` copies one kept before instead: loading
   1,000,000 takes minutes). The jobs run on a copy, so a kept database stays as loaded.
2. In process, ReindexWorkers with `--workers` workers (by default the service's default, FHIR_REINDEX_WORKERS),
   the jobs of `--scenarios` per type, each timed from start_reindex to `completed`:
   - "new param": a custom SearchParameter is stored for the type (Organization.alias, Observation.issued),
     then a plain $reindex: the new parameter alone is extracted from every resource and its rows written,
     with no look for stored ones, as the code was first in force after every resource was indexed (the
     day-to-day job);
   - "forced": force=true over current rows: every resource re-extracted with all parameters and compared
     with the rows stored (read back per batch); nothing differs, so nothing is written (HAPI's full
     reindex of unchanged data);
   - "unknown": the fingerprints cleared first (rows of unknown provenance, as after migration 0005): every
     resource re-extracted and compared with its stored rows, which are current, so only fingerprints are
     recorded;
   - "rebuild": the fingerprints cleared and the type's index rows deleted, so every resource's rows are
     missing and all are COPYed again (the worst case: an index lost, or every row changed by an extractor;
     a job compares with the stored rows and writes only the rows that differ).
   rows = the type's index rows after the job (rows extracted per resource, all types of index); written =
   rows COPYed by the job.
3. Raw baseline, same rows and batch size: server-side cursor in a read-only transaction, orjson.loads of
   each body, and COPY of as many constant rows as the job extracted into `raw_idx` (a logged table
   LIKE idx_token: same columns, no indexes), one transaction per batch. Ratio = job / raw.
4. Peak RSS: VmRSS of this process sampled while the worker runs (the data is generated and loaded by a
   child process, so this one holds what a service replica holds), and VmHWM of the service subprocess.
5. Over HTTP (`python -m service`, FHIR_REINDEX_WORKERS=`--workers`): a POST $reindex of the Organizations
   ("rebuild", or with `--http-job "new param"` one after a SearchParameter PUT) to the first 200 poll,
   while paced clients probe GET /readyz and GET /fhir/Organization/{id}; then, for a database of `--small`
   Organizations, a SearchParameter PUT followed by POST $reindex to the first 200 (the issue: 32 in < 1 s;
   HAPI 8.6.5: 4 min).
The machine is noisy (other processes run): compare the ratios, not the absolute figures, between runs.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import random
import resource
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import asyncpg
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (  # noqa: E402
    create_database,
    kept_database,
    scratch_database,
    service_process,
    unsigned_token,
)
from bench.generate import batches, organization_id  # noqa: E402
from service.collector import collect_rarely  # noqa: E402
from service.db import load_migrations, migrate
from service.event_loop import run as run_loop  # noqa: E402
from service.fhir.resource import Submitted  # noqa: E402
from service.jobs.start import ReindexPlan, start_reindex  # noqa: E402
from service.jobs.worker import ReindexWorkers, WorkerSettings  # noqa: E402
from service.logging import configure_logging  # noqa: E402
from service.pools import create_pool  # noqa: E402
from service.search.catalog import Catalogs  # noqa: E402
from service.search.param_hash import sp_hash  # noqa: E402
from service.search.registry import Registry  # noqa: E402
from service.settings import Settings  # noqa: E402
from service.store.bulk import write_batch  # noqa: E402
from service.store.indexes import TABLE_COLUMNS  # noqa: E402
from service.store.resources import ResourceStore  # noqa: E402

LOAD_BATCH = 2000
ENDED = ("completed", "failed", "cancelled")
COUNT_INDEX_ROWS = "SELECT " + " + ".join(
    f"(SELECT count(*) FROM {table} i JOIN resource r USING (res_id) WHERE r.res_type = $1)" for table in TABLE_COLUMNS)
JOB_COUNTS = """SELECT j.state, sum(c.processed), sum(c.changed), sum(c.unchanged), sum(c.failed)
FROM job j JOIN job_chunk c ON c.job_id = j.id WHERE j.id = $1 GROUP BY j.state"""
RAW_READ = """SELECT res_id, fhir_id, version, index_gen, body FROM resource
WHERE res_type = $1 AND NOT deleted ORDER BY res_id"""
RAW_ROW = (1, 1234567890123, "http://terminology.hl7.org/CodeSystem/organization-type", "prov", None)
COUNT_BY_TYPE = "SELECT res_type, count(*) FROM resource WHERE NOT deleted GROUP BY res_type"
COUNT_CODE_ROWS = "SELECT " + " + ".join(
    f"(SELECT count(*) FROM {table} WHERE sp_hash = $1)" for table in TABLE_COLUMNS)
CLEAR_FINGERPRINTS = "UPDATE resource_index_state SET index_hash = NULL WHERE res_type = $1"
DELETE_INDEX_ROWS = "; ".join(
    f"DELETE FROM {table} i USING resource r WHERE r.res_id = i.res_id AND r.res_type = '{{kind}}'"
    for table in TABLE_COLUMNS)
SCENARIOS = ("new param", "forced", "unknown", "rebuild")
# The custom parameter of the "new param" job, per type: (code, type, expression).
NEW_PARAMETERS = {"Organization": ("bench-alias", "string", "Organization.alias"),
                  "Observation": ("bench-issued", "date", "Observation.issued")}


@dataclass
class JobRun:
    kind: str
    scenario: str
    seconds: float
    processed: int
    changed: int
    failed: int
    index_rows: int
    written: int
    peak_rss_kib: int = 0  # of this process while the job ran
    raw_seconds: float = 0.0


def vm_kib(pid: int | str, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else float("nan")


async def open_pool(dsn: str) -> asyncpg.Pool:
    pool = await create_pool(dsn, Settings(database_url=dsn))
    async with pool.acquire() as conn:
        await migrate(conn, load_migrations())
    return pool


async def load(pool: asyncpg.Pool, catalogs: Catalogs, kind: str, count: int) -> float:
    started = time.perf_counter()
    async with pool.acquire() as conn:
        for batch in batches(kind, count, LOAD_BATCH):
            result = await write_batch(conn, [Submitted.of(item) for item in batch], catalogs)
            assert not result.rejected, result.rejected[:3]
        await conn.execute("VACUUM ANALYZE")
    return count / (time.perf_counter() - started)


def load_in_child(dsn: str, kind: str, count: int) -> float:
    """`load` in a process of its own, so generating and loading the data does not count in the peak
    RSS of the process that then runs the worker."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as child:
        return child.submit(_load_entry, dsn, kind, count).result()


def _load_entry(dsn: str, kind: str, count: int) -> float:
    async def run() -> float:
        pool = await create_pool(dsn, Settings(database_url=dsn))
        try:
            return await load(pool, Catalogs(Registry.builtin()), kind, count)
        finally:
            await pool.close()
    return run_loop(run())


async def wait_job(pool: asyncpg.Pool, job_id: object) -> asyncpg.Record:
    while True:
        row = await pool.fetchrow(JOB_COUNTS, job_id)
        if row is not None and row["state"] in ENDED:
            return row
        await asyncio.sleep(0.025)  # polling shares the worker's process: not too often


def search_parameter(code: str, kind: str, param_type: str, expression: str) -> dict:
    return {"resourceType": "SearchParameter", "id": code, "url": f"http://example.org/SearchParameter/{code}",
            "name": code, "status": "active", "code": code, "base": [kind], "type": param_type,
            "expression": expression, "description": f"bench: {expression}"}


async def timed_job(pool: asyncpg.Pool, catalogs: Catalogs, kind: str, scenario: str, batch_size: int) -> JobRun:
    """One job for `kind`, processed by the worker already running in this process."""
    force = scenario == "forced"
    if scenario == "new param":
        code, param_type, expression = NEW_PARAMETERS[kind]
        store = ResourceStore(pool, 5000, catalogs)
        await store.update(Submitted.of(search_parameter(code, kind, param_type, expression)), code, None)
    elif scenario in ("unknown", "rebuild"):
        await damage(pool, kind, lose_rows=scenario == "rebuild")
    started = time.perf_counter()
    job = await start_reindex(pool, ReindexPlan(types=(kind,), batch_size=batch_size, force=force),
                              catalogs.current.generation)
    row = await wait_job(pool, job.job_id)
    seconds = time.perf_counter() - started
    assert row["state"] == "completed", row
    index_rows = await pool.fetchval(COUNT_INDEX_ROWS, kind)
    if scenario == "new param":
        written = await pool.fetchval(COUNT_CODE_ROWS, sp_hash(kind, NEW_PARAMETERS[kind][0]))
    else:
        written = index_rows if scenario == "rebuild" else 0
    return JobRun(kind, scenario, seconds, int(row[1]), int(row[2]), int(row[4]), index_rows, written)


async def damage(pool: asyncpg.Pool | asyncpg.Connection, kind: str, lose_rows: bool) -> None:
    """Fingerprints of `kind` cleared, and with `lose_rows` its index rows deleted."""
    await pool.execute(CLEAR_FINGERPRINTS, kind)
    if lose_rows:
        assert kind.isalpha(), kind  # formatted into the statement: a resource type name
        await pool.execute(DELETE_INDEX_ROWS.format(kind=kind))
    await pool.execute("VACUUM ANALYZE")


async def sample_rss(peak: list[int]) -> None:
    while True:
        peak[0] = max(peak[0], vm_kib("self", "VmRSS"))
        await asyncio.sleep(0.02)


async def in_process_runs(pool: asyncpg.Pool, catalogs: Catalogs, kinds: list[str], workers: int,
                          batch_size: int, scenarios: list[str]) -> tuple[list[JobRun], int, int]:
    """The jobs with one in-process worker; returns them, VmRSS before and peak VmRSS (KiB)."""
    before, peak = vm_kib("self", "VmRSS"), [0]
    sampler = asyncio.create_task(sample_rss(peak))
    worker_task = asyncio.create_task(ReindexWorkers(pool, catalogs, WorkerSettings(count=workers)).run())
    runs = []
    try:
        for kind in kinds:
            for scenario in scenarios:
                job_peak = [0]
                job_sampler = asyncio.create_task(sample_rss(job_peak))
                try:
                    runs.append(await timed_job(pool, catalogs, kind, scenario, batch_size))
                finally:
                    job_sampler.cancel()
                runs[-1].peak_rss_kib = job_peak[0]
    finally:
        for task in (worker_task, sampler):
            task.cancel()
        await asyncio.gather(worker_task, sampler, return_exceptions=True)
    return runs, before, peak[0]


async def raw_baseline(dsn: str, run: JobRun, batch_size: int) -> float:
    """Seconds to stream, parse and COPY what the job read and extracted, with trivial extraction."""
    read, write = await asyncpg.connect(dsn), await asyncpg.connect(dsn)
    try:
        await write.execute("DROP TABLE IF EXISTS raw_idx; CREATE TABLE raw_idx (LIKE idx_token)")
        started, seen, written = time.perf_counter(), 0, 0
        async with read.transaction(isolation="repeatable_read", readonly=True):
            cursor = await read.cursor(RAW_READ, run.kind)
            while rows := await cursor.fetch(batch_size):
                for row in rows:
                    orjson.loads(row["body"])
                seen += len(rows)
                target = run.index_rows * seen // run.processed
                async with write.transaction():
                    await write.copy_records_to_table("raw_idx", records=[RAW_ROW] * (target - written))
                written = target
        return time.perf_counter() - started
    finally:
        await read.close()
        await write.close()


async def paced(session: aiohttp.ClientSession, url: str, stop: asyncio.Event, out: list[float],
                interval: float = 0.02, limit: int = 50_000) -> None:
    """GET `url` every `interval` s until `stop` (at most `limit` times), recording latencies (ms)."""
    for _ in range(limit):
        if stop.is_set():
            return
        started = time.perf_counter()
        async with session.get(url) as response:
            await response.read()
            assert response.status == 200, (url, response.status)
        out.append((time.perf_counter() - started) * 1000)
        await asyncio.sleep(interval)


async def reindex_over_http(session: aiohttp.ClientSession, base: str, url: str, batch: int, poll: float) -> float:
    """Seconds from POST $reindex to the first 200 of its poll URL."""
    body = {"resourceType": "Parameters", "parameter": [{"name": "url", "valueString": url},
                                                       {"name": "batchSize", "valueInteger": batch}]}
    started = time.perf_counter()
    async with session.post(f"{base}/fhir/$reindex", data=orjson.dumps(body)) as response:
        assert response.status == 202, await response.text()
        location = response.headers["Content-Location"]
    for _ in range(int(3600 / poll)):
        async with session.get(location) as response:
            await response.read()
            if response.status == 200:
                assert "completed successfully" in response.headers.get("X-Progress", ""), response.headers
                return time.perf_counter() - started
        await asyncio.sleep(poll)
    raise TimeoutError("the $reindex job did not end")


def http_session() -> aiohttp.ClientSession:
    token = unsigned_token(["Organization.read", "SearchParameter.write", "$reindex"])
    return aiohttp.ClientSession(headers={"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"})


def child_peak_rss() -> int:
    """VmHWM (KiB) of this process's children: the one service subprocess while it runs."""
    children = Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").read_text().split()
    return max((vm_kib(pid, "VmHWM") for pid in children), default=0)


async def probe(session: aiohttp.ClientSession, base: str, organizations: int, probes: int, stop: asyncio.Event,
                limit: int = 50_000) -> tuple[list[float], list[float]]:
    """`probes` paced clients each of /readyz and of reads of random Organizations, until `stop` or `limit`."""
    ready, reads, rng = [], [], random.Random(7)
    clients = [paced(session, f"{base}/readyz", stop, ready, limit=limit) for _ in range(probes)]
    clients += [paced(session, f"{base}/fhir/Organization/{organization_id(rng.randrange(organizations))}",
                      stop, reads, limit=limit) for _ in range(probes)]
    await asyncio.gather(*clients)
    return ready, reads


async def probed_http_run(dsn: str, organizations: int, probes: int, batch: int, workers: int,
                          job: str) -> dict[str, object]:
    """A reindex of the Organizations over HTTP ("rebuild", or "new param": after a SearchParameter PUT) while
    paced clients probe; the probes idle first."""
    if job == "rebuild":
        conn = await asyncpg.connect(dsn)
        await damage(conn, "Organization", lose_rows=True)
        await conn.close()
    stop = asyncio.Event()
    async with service_process(dsn, FHIR_REINDEX_WORKERS=str(workers)) as base, http_session() as session:
        if job == "new param":  # a code of its own: the in-process runs may have added theirs
            parameter = search_parameter("bench-http-alias", "Organization", "string", "Organization.alias")
            url = f"{base}/fhir/SearchParameter/bench-http-alias"
            async with session.put(url, data=orjson.dumps(parameter)) as put:
                assert put.status == 201, await put.text()
        idle = await probe(session, base, organizations, probes, asyncio.Event(), limit=100)
        during = asyncio.create_task(probe(session, base, organizations, probes, stop))
        try:
            seconds = await reindex_over_http(session, base, "Organization?", batch, 0.05)
        finally:
            stop.set()
            ready, reads = await during
        service_rss = child_peak_rss()
    return {"seconds": seconds, "idle": idle, "during": (ready, reads), "service_rss": service_rss}


async def small_http_runs(count: int, repeat: int, batch: int) -> list[float]:
    """Seconds from POST to 200 for `count` Organizations, `repeat` times, each after a SearchParameter PUT
    that changes the definition of a code on Organization (so each job has every resource to re-extract)."""
    async with scratch_database() as dsn:
        pool = await open_pool(dsn)
        await load(pool, Catalogs(Registry.builtin()), "Organization", count)
        times = []
        async with service_process(dsn, FHIR_REINDEX_WORKERS="1") as base, http_session() as session:
            for number in range(repeat):
                parameter = search_parameter("bench-small", "Organization", "string",
                                             ("Organization.alias", "Organization.name")[number % 2])
                async with session.put(f"{base}/fhir/SearchParameter/bench-small", data=orjson.dumps(parameter)) as put:
                    assert put.status in (200, 201), await put.text()
                times.append(await reindex_over_http(session, base, "Organization?", batch, 0.01))
        await pool.close()
        return times


def report(args: argparse.Namespace, runs: list[JobRun], rss: tuple[int, int], http: dict | None,
           small: list[float] | None) -> None:
    print(f"$reindex, {args.workers} in-process worker(s), batch {args.batch_size}; raw = cursor + orjson.loads + COPY "
          f"of as many constant rows as the job extracted, into a logged LIKE-idx_token table without indexes")
    print(f"{'type':<13}{'job':<10}{'resources':>10}{'rows':>12}{'written':>12}{'changed':>10}{'s':>8}{'res/s':>8}"
          f"{'rows/s':>10}{'raw res/s':>10}{'ratio':>6}{'peak MiB':>9}")
    for run in runs:
        print(f"{run.kind:<13}{run.scenario:<10}{run.processed:>10,}{run.index_rows:>12,}{run.written:>12,}"
              f"{run.changed:>10,}{run.seconds:>8.2f}{run.processed / run.seconds:>8,.0f}"
              f"{run.index_rows / run.seconds:>10,.0f}{run.processed / run.raw_seconds:>10,.0f}"
              f"{run.raw_seconds / run.seconds:>6.2f}{run.peak_rss_kib / 1024:>9.0f}")
    print(f"peak RSS of the worker process: {rss[1] / 1024:.0f} MiB (VmRSS sampled; {rss[0] / 1024:.0f} MiB "
          f"before the jobs; ru_maxrss {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB)")
    if http is None or small is None:
        return
    orgs = args.organizations
    print(f"HTTP: {orgs:,} Organizations, {args.http_job} POST $reindex -> 200 in {http['seconds']:.2f} s "
          f"({orgs / http['seconds']:,.0f} res/s); service VmHWM {http['service_rss'] / 1024:.0f} MiB")
    for index, name in enumerate(("GET /readyz", "GET /fhir/Organization/{id}")):
        idle, during = http["idle"][index], http["during"][index]
        print(f"  {name:<28} during: n={len(during):>5,} p50 {percentile(during, 0.5):6.1f} ms "
              f"p99 {percentile(during, 0.99):6.1f} ms | idle: p50 {percentile(idle, 0.5):5.1f} ms "
              f"p99 {percentile(idle, 0.99):5.1f} ms")
    print(f"HTTP: {args.small} Organizations, SearchParameter PUT then POST $reindex -> 200: "
          f"median {statistics.median(small):.3f} s, "
          f"max {max(small):.3f} s over {len(small)} runs (issue: < 1 s; HAPI 8.6.5: 4 min)")


async def loaded(dsn: str, counts: dict[str, int]) -> None:
    """The database migrated, and `counts` resources per type generated and loaded into it."""
    pool = await open_pool(dsn)
    await pool.close()
    for kind, count in counts.items():
        rate = await asyncio.to_thread(load_in_child, dsn, kind, count)
        print(f"loaded {count:,} {kind} ({rate:,.0f} res/s)", flush=True)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--organizations", type=int, default=30_000)
    parser.add_argument("--observations", type=int, default=20_000)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--workers", type=int, default=Settings().reindex_workers,
                        help="reindex workers of the in-process runs and the service (default: the service's)")
    parser.add_argument("--small", type=int, default=32)
    parser.add_argument("--probes", type=int, default=2, help="paced clients per probed endpoint")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS),
                        help=f"comma-separated, in this order: {','.join(SCENARIOS)}")
    parser.add_argument("--no-http", action="store_true", help="only the in-process jobs (e.g. for memory at scale)")
    parser.add_argument("--http-job", choices=("rebuild", "new param"), default="rebuild",
                        help="the job over HTTP while the probes run")
    named = parser.add_mutually_exclusive_group()
    named.add_argument("--keep", metavar="DBNAME", help="load into this new database and keep it (runs on a copy)")
    named.add_argument("--reuse", metavar="DBNAME", help="run on a copy of a database kept by --keep (no load)")
    args = parser.parse_args()
    configure_logging(Settings(log_level="WARNING"))
    catalogs = Catalogs(Registry.builtin())
    counts = {kind: count for kind, count in (("Organization", args.organizations),
                                              ("Observation", args.observations)) if count}
    kept = kept_database(args.keep or args.reuse)
    if args.keep:
        await create_database(args.keep)
        await loaded(kept, counts)
    async with scratch_database(kept) as dsn:  # the jobs change what they run on: a kept database stays as loaded
        if kept is None:
            await loaded(dsn, counts)
        pool = await open_pool(dsn)
        counts = dict(await pool.fetch(COUNT_BY_TYPE))
        args.organizations = counts.get("Organization", 0)
        collect_rarely()  # as the service does once started (service/__main__.py)
        runs, before, peak = await in_process_runs(pool, catalogs, list(counts), args.workers, args.batch_size,
                                                   args.scenarios.split(","))
        await pool.close()
        for run in runs:
            run.raw_seconds = await raw_baseline(dsn, run, args.batch_size)
        http = None if args.no_http else await probed_http_run(dsn, args.organizations, args.probes, args.batch_size,
                                                               args.workers, args.http_job)
    small = None if args.no_http else await small_http_runs(args.small, 5, args.batch_size)
    report(args, runs, (before, peak), http, small)


if __name__ == "__main__":
    run_loop(main())
