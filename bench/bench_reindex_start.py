"""Time from `POST $reindex` to its 202, by table size: the request only records the job, and a worker
plans it (chunks and estimate) afterwards.

    python bench/bench_reindex_start.py [--resources N ...] [--posts P]

For each N (default 100,000 and 1,000,000):
1. a scratch database holding N resources of three types (Organization, Patient, Observation; a tenth of
   them deleted), written by SQL with minimal bodies: neither the POST nor the planner reads a body;
2. `python -m service` with FHIR_REINDEX_WORKERS=0, so no planner competes with the requests, and P
   sequential POSTs, each a new job (a different batchSize; alternately every type and `Organization?`),
   timed by the client from send to 202: median, 95th percentile and maximum;
3. one of those jobs planned in this process as a worker plans it (`plan_next_job`): the seconds the
   planning takes, which the POST used to spend in the request's transaction before answering.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import aiohttp
import asyncpg
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import scratch_database, service_process, unsigned_token  # noqa: E402
from service.db import create_pool, load_migrations, migrate  # noqa: E402
from service.event_loop import run as run_loop  # noqa: E402
from service.jobs.planning import plan_next_job  # noqa: E402
from service.jobs.start import covers  # noqa: E402
from service.logging import configure_logging  # noqa: E402
from service.search.catalog import Catalogs  # noqa: E402
from service.search.registry import Registry  # noqa: E402
from service.settings import Settings  # noqa: E402

TYPES = ("Organization", "Patient", "Observation")
# Interleaved types, as a real load leaves them; every tenth resource deleted.
FILL = """
INSERT INTO resource (res_type, fhir_id, version, last_updated, deleted, body)
SELECT ($2::text[])[1 + g % 3], 'bench-' || g, 1, now(), g % 10 = 0,
       CASE WHEN g % 10 <> 0 THEN convert_to('{"resourceType":"' || ($2::text[])[1 + g % 3] || '","id":"bench-' || g
                                             || '"}', 'UTF8') END
FROM generate_series($1::bigint + 1, $1::bigint + $3) AS g"""
FILL_SLICE = 250_000


async def fill(dsn: str, count: int) -> float:
    """Migrate the database and write `count` resources; returns the seconds it took."""
    started = time.perf_counter()
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn, load_migrations())
        for offset in range(0, count, FILL_SLICE):
            await conn.execute(FILL, offset, list(TYPES), min(FILL_SLICE, count - offset))
        await conn.execute("VACUUM ANALYZE resource")
    finally:
        await conn.close()
    return time.perf_counter() - started


async def post_latencies(base: str, posts: int) -> list[float]:
    token = unsigned_token(["$reindex"])
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json",
               "Prefer": "respond-async"}
    seconds = []
    async with aiohttp.ClientSession(headers=headers) as session:
        for number in range(posts):
            parameter = [{"name": "batchSize", "valueInteger": 100 + number}]
            if number % 2:
                parameter.append({"name": "url", "valueString": "Organization?"})
            body = orjson.dumps({"resourceType": "Parameters", "parameter": parameter})
            started = time.perf_counter()
            async with session.post(f"{base}/fhir/$reindex", data=body) as response:
                await response.read()
                assert response.status == 202, response.status
            seconds.append(time.perf_counter() - started)
    return seconds


async def planning_seconds(dsn: str) -> tuple[float, int, int]:
    """Plan the oldest queued job (every type) as a worker does: seconds, chunks, estimate."""
    pool = await create_pool(dsn, Settings(database_url=dsn))
    try:
        started = time.perf_counter()
        job_id = await plan_next_job(pool, Catalogs(Registry.builtin()), covers)
        elapsed = time.perf_counter() - started
        chunks = await pool.fetchval("SELECT count(*) FROM job_chunk WHERE job_id = $1", job_id)
        estimate = await pool.fetchval("SELECT total_estimate FROM job WHERE id = $1", job_id)
    finally:
        await pool.close()
    return elapsed, chunks, estimate


async def measure(count: int, posts: int) -> None:
    async with scratch_database() as dsn:
        filled = await fill(dsn, count)
        async with service_process(dsn, FHIR_REINDEX_WORKERS="0") as base:
            seconds = sorted(await post_latencies(base, posts))
        planned, chunks, estimate = await planning_seconds(dsn)
    milliseconds = [value * 1000 for value in seconds]
    p95 = milliseconds[min(len(milliseconds) - 1, round(0.95 * len(milliseconds)))]
    print(f"{count:>11,} resources (filled in {filled:.0f} s): POST $reindex -> 202 "
          f"median {statistics.median(milliseconds):.1f} ms, p95 {p95:.1f} ms, max {milliseconds[-1]:.1f} ms "
          f"over {posts} jobs; planning in a worker {planned:.2f} s ({chunks} chunks, estimate {estimate:,})",
          flush=True)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--resources", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--posts", type=int, default=20)
    args = parser.parse_args()
    configure_logging(Settings(log_level="WARNING"))
    for count in args.resources:
        await measure(count, args.posts)


if __name__ == "__main__":
    run_loop(main())
