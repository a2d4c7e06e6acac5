"""Search latency at scale: everyday search shapes against many Organizations and Observations, over HTTP.

    python bench/bench_search.py [--organizations N] [--observations N] [--clients C] [--requests R]
                                 [--keep DBNAME | --reuse DBNAME]

Loads synthetic Organizations (an identifier, a name, an address city, a custom `kind` token, `partOf` the
nearest lower multiple of 100, so every 100th one is a parent; 1 parent in 100 is a "Sygehus") and
Observations (a Patient subject, a LOINC code, a valueQuantity) through the loader's own `write_batch`,
ANALYZEs, starts the service and runs each shape with C concurrent clients, R timed requests after 500 untimed
ones (so every pooled connection has prepared the shape's statements). Per shape: req/s, p50, p99, and
the plan node types of `EXPLAIN (ANALYZE, BUFFERS)` of the statements the service runs for it. The baseline is
a raw asyncpg lookup of one Organization by identifier with the same clients and as many connections as the
service's request pool. `--keep` loads into a database of that name and keeps it; `--reuse` searches one kept
before (loading 1,000,000 takes minutes). Compare the ratios, not the absolute figures, between machines.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import parse_qsl

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
from service.db import load_migrations, migrate  # noqa: E402
from service.event_loop import run as run_loop  # noqa: E402
from service.fhir.resource import Submitted  # noqa: E402
from service.pools import create_pool  # noqa: E402
from service.search.catalog import Catalogs  # noqa: E402
from service.search.param_hash import sp_hash  # noqa: E402
from service.search.query import SearchQuery, parse_search  # noqa: E402
from service.search.registry import Registry  # noqa: E402
from service.search.terms import SearchContext  # noqa: E402
from service.settings import Settings  # noqa: E402
from service.store.bulk import analyze_resources, write_batch  # noqa: E402
from service.store.search import first_statement  # noqa: E402
from service.store.search_parameters import refresh_catalog  # noqa: E402

BATCH = 5000
WARM_UP = 500  # requests per shape before the timed ones
ORG_SYSTEM = "urn:bench:organization"
KIND_URL = "http://bench.example/kind"
CITIES = ("Aarhus", "Odense", "Aalborg", "Esbjerg", "Randers", "Kolding", "Horsens", "Vejle", "Roskilde", "Herning")
WORDS = ("Klinik", "Center", "Praksis", "Afdeling", "Enhed", "Ambulatorium", "Hospice", "Apotek")
CODES = (("8867-4", "/min", 50.0, 120.0), ("8302-2", "cm", 45.0, 200.0), ("29463-7", "kg", 3.0, 140.0),
         ("2339-0", "mg/dL", 60.0, 200.0), ("9279-1", "/min", 10.0, 25.0))
KIND_PARAMETER = {"resourceType": "SearchParameter", "id": "bench-kind", "url": "http://bench.example/sp/kind",
                  "name": "kind", "status": "active", "code": "kind", "base": ["Organization"], "type": "token",
                  "expression": f"Organization.extension('{KIND_URL}').value", "description": "bench kind code"}
BASELINE_SQL = ("SELECT r.res_id, r.body FROM idx_token t JOIN resource r ON r.res_id = t.res_id "
                "WHERE t.sp_hash = $1 AND t.value = $2 AND t.system = $3 AND NOT r.deleted")


def organization(n: int) -> dict:
    parent = n - n % 100
    sygehus = n % 10000 == 0
    name = f"Sygehus {CITIES[n % 10]} {n}" if sygehus else f"{WORDS[n % 8]} {CITIES[(n // 7) % 10]} {n}"
    resource = {"resourceType": "Organization", "id": f"o{n}", "active": True,
                "extension": [{"url": KIND_URL, "valueCode": f"k{n % 5000}"}],
                "identifier": [{"system": ORG_SYSTEM, "value": f"org-{n}"}], "name": name,
                "address": [{"line": [f"Vej {n % 300}"], "city": CITIES[n % 10], "country": "DK"}]}
    if parent != n:
        resource["partOf"] = {"reference": f"Organization/o{parent}"}
    return resource


def observation(n: int) -> dict:
    code, unit, low, high = CODES[n % len(CODES)]
    value = round(low + (high - low) * ((n * 7919) % 1000) / 1000, 1)
    return {"resourceType": "Observation", "id": f"b{n}", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "subject": {"reference": f"Patient/p{n // 10}"}, "effectiveDateTime": "2020-01-01T00:00:00Z",
            "valueQuantity": {"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit}}


def shapes(orgs: int, observations: int) -> dict[str, Callable[[random.Random], str]]:
    """Each shape's query string for a random draw (ids that exist at this size)."""
    def org(rng: random.Random) -> int:
        return rng.randrange(orgs)
    return {
        "identifier": lambda r: f"Organization?identifier={ORG_SYSTEM}|org-{org(r)}",
        "_id": lambda r: f"Organization?_id=o{org(r)}",
        "_id+_include": lambda r: f"Organization?_id=o{org(r)}&_include=Organization:partof",
        "custom token": lambda r: f"Organization?kind=k{r.randrange(5000)}",
        "subject": lambda r: f"Observation?subject=Patient/p{r.randrange(max(observations // 10, 1))}",
        "name prefix": lambda r: f"Organization?name={r.choice(WORDS)}",
        "address-city": lambda r: f"Organization?address-city={r.choice(CITIES)}",
        "_lastUpdated": lambda r: "Organization?_lastUpdated=ge2000-01-01&_sort=-_lastUpdated",
        "chain": lambda r: "Organization?partof:Organization.name=Sygehus",
        "_revinclude": lambda r: f"Organization?_id=o{org(r) // 100 * 100}&_revinclude=Organization:partof",
        "composite": lambda r: "Observation?code-value-quantity=http://loinc.org|8867-4$gt119",
        "_has": lambda r: f"Organization?_has:Organization:partof:identifier={ORG_SYSTEM}|org-{org(r)}",
    }


async def migrated(database_url: str) -> None:
    """Apply the migrations this code ships (a database kept by an older version gets the new ones), before
    anything is timed or explained."""
    conn = await asyncpg.connect(database_url)
    try:
        await migrate(conn, load_migrations())
    finally:
        await conn.close()


async def load(database_url: str, orgs: int, observations: int) -> None:
    await migrated(database_url)
    pool = await create_pool(database_url, Settings(database_url=database_url))
    try:
        async with pool.acquire() as conn:
            catalogs = Catalogs(Registry.builtin())
            await write_batch(conn, [Submitted.of(KIND_PARAMETER)], catalogs)
            await refresh_catalog(pool, catalogs)
            started = time.perf_counter()
            for make, count in ((organization, orgs), (observation, observations)):
                for start in range(0, count, BATCH):
                    batch = [Submitted.of(make(n)) for n in range(start, min(start + BATCH, count))]
                    await write_batch(conn, batch, catalogs)
                    print(f"\r  loaded {start + len(batch):>9,} {make.__name__}s", end="", file=sys.stderr)
            await analyze_resources(conn)
            print(f"\r  loaded {orgs + observations:,} resources in {time.perf_counter() - started:.0f} s",
                  file=sys.stderr)
    finally:
        await pool.close()


async def timed(count: int, clients: int, operation: Callable[[int], Awaitable[None]]) -> tuple[float, list[float]]:
    """Run `operation(i)` for i < count with `clients` in flight: requests/s and each one's latency (s)."""
    queue: Iterator[int] = iter(range(count))
    latencies: list[float] = []

    async def client() -> None:
        for index in queue:
            started = time.perf_counter()
            await operation(index)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return count / (time.perf_counter() - started), sorted(latencies)


def summary(name: str, rate: float, latencies: list[float], plan: str = "") -> str:
    p50, p99 = (latencies[min(len(latencies) - 1, int(len(latencies) * q))] * 1000 for q in (0.5, 0.99))
    return f"{name:<14} {rate:>8,.0f} req/s  p50 {p50:>8.1f} ms  p99 {p99:>8.1f} ms  {plan}"


async def http_shape(session: aiohttp.ClientSession, base: str, make: Callable[[random.Random], str],
                     count: int, clients: int) -> tuple[float, list[float], Counter[int]]:
    """req/s, latencies, and the statuses other than 200 (a collapsing shape gets 503s: no free connection)."""
    rng = random.Random(7)
    urls = [f"{base}/fhir/{make(rng)}&_count=20" for _ in range(count + WARM_UP)]
    failed: Counter[int] = Counter()

    async def search(index: int) -> None:
        async with session.get(urls[index]) as response:
            await response.read()
            if response.status != 200:
                failed[response.status] += 1
    # Untimed first, at full concurrency: the client's connections are opened and every pooled connection of the
    # service has prepared the shape's statements, so the percentiles are of a service that runs the shape.
    # Other URLs than the timed ones, whose pages are not read into the caches yet.
    await timed(WARM_UP, clients, lambda index: search(count + index))
    failed.clear()
    return (*await timed(count, clients, search), failed)


async def baseline(database_url: str, orgs: int, count: int, clients: int, connections: int) -> tuple[float, list]:
    pool = await asyncpg.create_pool(database_url, min_size=connections, max_size=connections)
    rng, code_hash = random.Random(7), sp_hash("Organization", "identifier")
    try:
        async def lookup(_index: int) -> None:
            async with pool.acquire() as conn:
                assert await conn.fetchrow(BASELINE_SQL, code_hash, f"org-{rng.randrange(orgs)}", ORG_SYSTEM)
        await timed(WARM_UP, clients, lookup)  # untimed, as the service's shapes
        return await timed(count, clients, lookup)
    finally:
        await pool.close()


async def plan_nodes(conn: asyncpg.Connection, query: SearchQuery) -> str:
    """Node types of the executed plan of the page statement (with the first round of includes, as the service
    runs it)."""
    statement = first_statement(query, 1001)
    nodes: Counter[str] = Counter()
    plan = await conn.fetchval(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {statement.text}", *statement.params)
    walk((plan if isinstance(plan, list) else orjson.loads(plan))[0]["Plan"], nodes)  # the pool decodes json
    return ", ".join(f"{name}{'' if n == 1 else f' x{n}'}" for name, n in nodes.most_common(5))


def walk(node: dict, nodes: Counter[str]) -> None:
    relation = node.get("Index Name") or node.get("Relation Name")
    nodes[node["Node Type"] + (f" {relation}" if relation else "")] += 1
    for child in node.get("Plans", ()):
        walk(child, nodes)


async def explain_all(database_url: str, queries: dict[str, str]) -> dict[str, str]:
    pool = await create_pool(database_url, Settings(database_url=database_url))
    try:
        catalogs = Catalogs(Registry.builtin())
        await refresh_catalog(pool, catalogs)
        context = SearchContext(catalogs.current.registry, "http://bench/fhir", datetime.now(UTC), False, 20, 1000)
        plans = {}
        async with pool.acquire() as conn:
            for name, url in queries.items():
                res_type, _, query_string = url.partition("?")
                query = parse_search(res_type, [*parse_qsl(query_string), ("_count", "20")], context)
                plans[name] = await plan_nodes(conn, query)
        return plans
    finally:
        await pool.close()


@asynccontextmanager
async def database(args: argparse.Namespace) -> AsyncIterator[str]:
    """The database to search: a kept one (`--reuse`), one loaded and kept (`--keep`), or a scratch one."""
    named = args.reuse or args.keep
    if named:
        url = kept_database(named)
        assert url is not None, "a database name"
        if args.keep:
            await create_database(named)
            await load(url, args.organizations, args.observations)
        await migrated(url)
        yield url
        return
    async with scratch_database() as url:
        await load(url, args.organizations, args.observations)
        yield url


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--organizations", type=int, default=100_000)
    parser.add_argument("--observations", type=int)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=3000, help="timed per shape, after %d untimed" % WARM_UP)
    kept = parser.add_mutually_exclusive_group()
    kept.add_argument("--keep", metavar="DBNAME", help="load into this new database and keep it")
    kept.add_argument("--reuse", metavar="DBNAME", help="search a database kept by --keep (no load)")
    args = parser.parse_args()
    args.observations = args.organizations if args.observations is None else args.observations
    async with database(args) as url:
        conn = await asyncpg.connect(url)
        orgs = await conn.fetchval("SELECT count(*) FROM resource WHERE res_type = 'Organization'")
        observations = await conn.fetchval("SELECT count(*) FROM resource WHERE res_type = 'Observation'")
        await conn.close()
        print(f"{orgs:,} Organizations, {observations:,} Observations, {args.clients} clients, _count=20")
        queries = shapes(orgs, observations)
        connections = Settings(database_url=url).request_pool().max_size
        rate, latencies = await baseline(url, orgs, args.requests, args.clients, connections)
        print(summary("baseline", rate, latencies, f"(raw asyncpg, {connections} connections)"))
        plans = await explain_all(url, {name: make(random.Random(7)) for name, make in queries.items()})
        roles = [f"{t}.{p}" for t in ("Organization", "Observation", "Patient") for p in ("read", "search")]
        headers = {"Authorization": f"Bearer {unsigned_token(roles)}"}
        async with service_process(url) as base, aiohttp.ClientSession(
                headers=headers, connector=aiohttp.TCPConnector(limit=args.clients)) as session:
            for name, make in queries.items():
                rate, latencies, failed = await http_shape(session, base, make, args.requests, args.clients)
                errors = "".join(f" {n} x {status}," for status, n in failed.items())
                print(summary(name, rate, latencies, errors + plans[name]), flush=True)


if __name__ == "__main__":
    run_loop(main())
