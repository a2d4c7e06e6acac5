"""REST and bulk-load throughput of one service process, against baselines measured in the same run.

    python bench/bench_rest.py [--requests N] [--concurrency C] [--auth jwks|hs256] [--runs R]
                               [--parts rest,store,load] [--preload N]

- rest: requests/s of `POST /fhir/Organization` (create), `GET /fhir/Organization/{id}` (read) and
  `PUT /fhir/Organization/{id}` (update, one changed name) over HTTP with C concurrent clients and a
  signed token on every request (the service in `jwks` mode with an RS256 key, or `hs256`), against
  bench/rest_baseline.py: a minimal aiohttp + asyncpg app without authentication doing the same
  database work (the body by (res_type, fhir_id); the body, its version row and the same index rows
  in one transaction), with as many connections as the service's requests get. Both work on one database,
  so both meet the same table: with --preload N, N generated Organizations (bench/generate.py) are first
  written into it through the loader's `write_batch`, so that requests meet a table of that size (the ids
  cannot collide: generated ones are `bench-org-…`, created ones random UUIDs on both sides).
- store: the service's create and read over HTTP against its store layer doing the same in this
  process (no HTTP): what the HTTP stack (parsing, middlewares, negotiation, the client) costs.
- load: resources/s of `python -m service load` on tests/data, against a raw baseline of the same
  lines parsed with orjson and COPYed as (type, id, body) into an unindexed table.
With --runs R, each figure is the median of R rounds: for rest, service and baseline take turns in the same
processes, so that both meet the same load from elsewhere on the machine; store and load run R times afresh.
Machines are noisy: compare the ratios, not the absolute figures, between runs.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import asyncpg
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (  # noqa: E402
    DATA_DIR,
    ndjson_lines,
    preload,
    run_concurrently,
    scratch_database,
    server_process,
    service_process,
    unsigned_token,
)
from bench.signed_tokens import signed_auth  # noqa: E402
from service.db import load_migrations, migrate  # noqa: E402
from service.event_loop import run as run_loop  # noqa: E402
from service.fhir.resource import Submitted  # noqa: E402
from service.logging import configure_logging  # noqa: E402
from service.pools import create_pool  # noqa: E402
from service.search.catalog import Catalogs  # noqa: E402
from service.search.registry import Registry  # noqa: E402
from service.settings import Settings  # noqa: E402
from service.store.resources import ResourceStore  # noqa: E402

DATASETS = ("synthea-r4-2019", "synthea-bulk-10", "synthea-bulk-1000", "plannet")
ROLES = ["Organization.read", "Organization.write"]
Figures = dict[str, float]


def organizations() -> list[dict]:
    """Realistic Organizations (Plan-Net and Synthea), without their ids."""
    found = [orjson.loads(line) for line in ndjson_lines("plannet/Organization.ndjson.gz",
                                                        "synthea-bulk-1000/Organization.ndjson.gz")]
    for resource in found:
        resource.pop("id", None)
        resource.pop("meta", None)
    return found


def bodies() -> list[dict]:
    """What the rest round sends: every Organization to create, then each again with a changed name to
    update it with (without its id). The baseline extracts the index rows of these at start."""
    created = [dict(org, resourceType="Organization") for org in organizations()]
    return created + [dict(org, name=f"{org.get('name', '')} (updated)") for org in created]


OPERATIONS = ("read", "create", "update")


class RestClient:
    """`concurrency` clients of one server at once: create, read and update rounds of N requests each, reads and
    updates on the resources created so far. `X-Bench-Body` tells the baseline which body it got."""

    def __init__(self, session: aiohttp.ClientSession, base: str, concurrency: int) -> None:
        self.session, self.base, self.concurrency = session, base, concurrency
        self.sent = bodies()
        self.half = len(self.sent) // 2
        self.encoded = [orjson.dumps(body) for body in self.sent]
        self.ids: list[str] = []

    async def round(self, operation: str, count: int) -> float:
        """Requests/s of `count` requests of `operation`."""
        return await run_concurrently(count, self.concurrency, getattr(self, operation))

    async def create(self, index: int) -> None:
        which = index % self.half
        async with self.session.post(f"{self.base}/fhir/Organization", data=self.encoded[which],
                                     headers={"X-Bench-Body": str(which)}) as response:
            assert response.status == 201, await response.text()
            self.ids.append((await response.json(content_type=None))["id"])

    async def read(self, index: int) -> None:
        async with self.session.get(f"{self.base}/fhir/Organization/{self.ids[index % len(self.ids)]}") as response:
            assert response.status == 200, await response.text()
            await response.read()

    async def update(self, index: int) -> None:
        which, fhir_id = self.half + index % self.half, self.ids[index % len(self.ids)]
        async with self.session.put(f"{self.base}/fhir/Organization/{fhir_id}", headers={"X-Bench-Body": str(which)},
                                    data=orjson.dumps(dict(self.sent[which], id=fhir_id))) as response:
            assert response.status == 200, await response.text()
            await response.read()


@asynccontextmanager
async def rest_client(base: str, token: str, concurrency: int) -> AsyncIterator[RestClient]:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"}
    async with aiohttp.ClientSession(headers=headers, connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        yield RestClient(session, base, concurrency)


@asynccontextmanager
async def baseline_process(database_url: str) -> AsyncIterator[str]:
    """bench/rest_baseline.py on a migrated database, with as many connections as the service's requests."""
    connections = Settings(database_url="postgresql://unused").request_pool().max_size
    script = str(Path(__file__).with_name("rest_baseline.py"))
    async with server_process(lambda port: [script, str(port), str(connections)],
                              DATABASE_URL=database_url) as base:
        yield base


async def rest_part(auth: str, count: int, concurrency: int, runs: int, preloaded: int) -> Figures:
    """Medians of `runs` rounds per operation, service and baseline taking turns on one database after
    `preloaded` Organizations were written into it, so that both meet the same table and the same load from
    elsewhere on the machine (creates first: reads and updates need resources)."""
    async with signed_auth(auth, ROLES) as (env, token), scratch_database() as database_url:
        await preload(database_url, preloaded)
        return await rest_rounds(database_url, env, token, count, concurrency, runs)


async def rest_rounds(database_url: str, env: dict[str, str], token: str, count: int, concurrency: int,
                      runs: int) -> Figures:
    async with service_process(database_url, **env) as service_base, baseline_process(database_url) as baseline_base, \
            rest_client(service_base, token, concurrency) as service, \
            rest_client(baseline_base, "no-token-checked", concurrency) as baseline:
        figures: dict[str, list[float]] = {}
        for operation in ("create", "read", "update"):
            for _ in range(runs):
                figures.setdefault(f"service {operation}", []).append(await service.round(operation, count))
                figures.setdefault(f"baseline {operation}", []).append(await baseline.round(operation, count))
    return {name: statistics.median(values) for name, values in figures.items()}


async def store_round(database_url: str, count: int, concurrency: int) -> Figures:
    orgs = organizations()
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

        return {"create": await run_concurrently(count, concurrency, create),
                "read": await run_concurrently(count, concurrency, read)}
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


async def store_part(count: int, concurrency: int) -> Figures:
    async with scratch_database() as database_url:
        store = await store_round(database_url, count, concurrency)
    async with scratch_database() as database_url, service_process(database_url) as base, \
            rest_client(base, unsigned_token(ROLES), concurrency) as client:
        http = {operation: await client.round(operation, count) for operation in ("create", "read")}
    return {**{f"http {name}": value for name, value in http.items()},
            **{f"store {name}": value for name, value in store.items()}}


async def load_part() -> Figures:
    async with scratch_database() as database_url:
        loaded = await asyncio.to_thread(cli_load, database_url)
    async with scratch_database() as database_url:
        raw = await raw_load(database_url)
    return {"load": loaded, "raw load": raw}


async def median_of(runs: int, part: Callable[[], Awaitable[Figures]]) -> Figures:
    results = [await part() for _ in range(runs)]
    return {name: statistics.median(result[name] for result in results) for name in results[0]}


def line(name: str, value: float, unit: str, baseline_name: str, baseline: float) -> str:
    return (f"{name:<8} {value:>9,.0f} {unit}   {baseline_name:<22} {baseline:>9,.0f} {unit}   "
            f"ratio {value / baseline:.2f}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--auth", choices=("jwks", "hs256"), default="jwks")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--parts", default="rest,store,load", help="comma-separated: rest, store, load")
    parser.add_argument("--preload", type=int, default=0, help="rest: Organizations in the database beforehand")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    configure_logging(Settings(database_url="postgresql://unused"), quiet=True)
    print(f"{args.concurrency} concurrent clients, {args.requests} requests per figure, "
          f"median of {args.runs} run(s), {args.preload:,} Organizations preloaded for rest")
    if "rest" in parts:
        rest = await rest_part(args.auth, args.requests, args.concurrency, args.runs, args.preload)
        for name in OPERATIONS:
            print(line(name, rest[f"service {name}"], "req/s", "minimal aiohttp+asyncpg", rest[f"baseline {name}"])
                  + f"   ({args.auth} token)")
    if "store" in parts:
        store = await median_of(args.runs, lambda: store_part(args.requests, args.concurrency))
        for name in ("read", "create"):
            print(line(name, store[f"http {name}"], "req/s", "store-only, no HTTP", store[f"store {name}"])
                  + "   (unsigned token)")
    if "load" in parts:
        load = await median_of(args.runs, load_part)
        print(line("load", load["load"], "res/s", "raw parse+COPY", load["raw load"]))


if __name__ == "__main__":
    run_loop(main())
