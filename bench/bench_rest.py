"""REST and bulk-load throughput of one service process, against baselines measured in the same run.

    python bench/bench_rest.py [--requests N] [--concurrency C]

- create / read: requests/s of `POST /fhir/Organization` and `GET /fhir/Organization/{id}` over HTTP,
  against the store layer doing the same writes and reads in this process (no HTTP): the ratio is
  what the HTTP stack (parsing, middlewares, negotiation, the client) costs.
- load: resources/s of `python -m service load` on tests/data, against a raw baseline of the same
  lines parsed with orjson and COPYed as (type, id, body) into an unindexed table.
Machines are noisy: compare the ratios, not the absolute figures, between runs.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import asyncpg
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import DATA_DIR, ndjson_lines, run_concurrently, scratch_database, service_process, unsigned_token  # noqa: E402
from service.db import load_migrations, migrate
from service.fhir.resource import Submitted  # noqa: E402
from service.pools import create_pool  # noqa: E402
from service.search.catalog import Catalogs  # noqa: E402
from service.search.registry import Registry  # noqa: E402
from service.settings import Settings  # noqa: E402
from service.store.resources import ResourceStore  # noqa: E402

DATASETS = ("synthea-r4-2019", "synthea-bulk-10", "synthea-bulk-1000", "plannet")


def organizations() -> list[dict]:
    """Realistic Organizations (Plan-Net and Synthea), without their ids."""
    found = [orjson.loads(line) for line in ndjson_lines("plannet/Organization.ndjson.gz",
                                                        "synthea-bulk-1000/Organization.ndjson.gz")]
    for resource in found:
        resource.pop("id", None)
        resource.pop("meta", None)
    return found


async def http_round(base: str, orgs: list[dict], count: int, concurrency: int) -> tuple[float, float]:
    token = unsigned_token(["Organization.read", "Organization.write"])
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"}
    ids: list[str] = []
    bodies = [orjson.dumps(org) for org in orgs]
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(headers=headers, connector=connector) as session:
        async def create(index: int) -> None:
            async with session.post(f"{base}/fhir/Organization", data=bodies[index % len(bodies)]) as response:
                assert response.status == 201, await response.text()
                ids.append((await response.json(content_type=None))["id"])

        async def read(index: int) -> None:
            async with session.get(f"{base}/fhir/Organization/{ids[index % len(ids)]}") as response:
                assert response.status == 200
                await response.read()

        return (await run_concurrently(count, concurrency, create),
                await run_concurrently(count, concurrency, read))


async def store_round(database_url: str, orgs: list[dict], count: int, concurrency: int) -> tuple[float, float]:
    settings = Settings(database_url=database_url)
    pool = await create_pool(database_url, settings)
    async with pool.acquire() as conn:
        await migrate(conn, load_migrations())
    store = ResourceStore(pool, settings.lock_timeout_ms, Catalogs(Registry.builtin()))
    ids: list[str] = []
    try:
        async def create(index: int) -> None:
            written = await store.create(Submitted.of(dict(orgs[index % len(orgs)], resourceType="Organization")))
            ids.append(written.version.fhir_id)

        async def read(index: int) -> None:
            assert (await store.read("Organization", ids[index % len(ids)])) is not None

        return (await run_concurrently(count, concurrency, create),
                await run_concurrently(count, concurrency, read))
    finally:
        await pool.close()


def cli_load(database_url: str) -> float:
    data = [str(DATA_DIR / name) for name in DATASETS]
    result = subprocess.run([sys.executable, "-m", "service", "load", *data], capture_output=True, text=True,
                            env={"DATABASE_URL": database_url, "PATH": "/usr/bin:/bin", "FHIR_LOG_LEVEL": "WARNING"},
                            check=True)
    return float(re.search(r"([\d,]+) resources/s", result.stdout).group(1).replace(",", ""))


async def raw_load(database_url: str) -> float:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("CREATE TABLE raw_load (res_type text, fhir_id text, body bytea)")
        started = time.perf_counter()
        rows = []
        for line in ndjson_lines(*DATASETS):
            resource = orjson.loads(line)
            rows.append((resource["resourceType"], resource["id"], orjson.dumps(resource)))
        await conn.copy_records_to_table("raw_load", records=rows)
        return len(rows) / (time.perf_counter() - started)
    finally:
        await conn.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    orgs = organizations()

    async with scratch_database() as database_url:
        store_create, store_read = await store_round(database_url, orgs, args.requests, args.concurrency)
    async with scratch_database() as database_url:
        async with service_process(database_url) as base:
            http_create, http_read = await http_round(base, orgs, args.requests, args.concurrency)
    async with scratch_database() as database_url:
        loaded = await asyncio.to_thread(cli_load, database_url)
    async with scratch_database() as database_url:
        raw = await raw_load(database_url)

    print(f"{'create':<8} {http_create:>9,.0f} req/s   store-only baseline {store_create:>9,.0f} ops/s   "
          f"ratio {http_create / store_create:.2f}")
    print(f"{'read':<8} {http_read:>9,.0f} req/s   store-only baseline {store_read:>9,.0f} ops/s   "
          f"ratio {http_read / store_read:.2f}")
    print(f"{'load':<8} {loaded:>9,.0f} res/s   raw parse+COPY      {raw:>9,.0f} res/s   ratio {loaded / raw:.2f}")


if __name__ == "__main__":
    asyncio.run(main())
