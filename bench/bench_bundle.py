"""Batch and transaction Bundles of new Organizations, against loading the same resources, in one run.

    python bench/bench_bundle.py [--entries N] [--rounds R] [--preload P]

- transaction: `POST /fhir` with a transaction of N plain creates (realistic Organizations from Plan-Net and
  Synthea, without ids), one service process over HTTP; the time from sending the Bundle to reading the
  whole transaction-response. The target is under 1 s for 1,000 entries.
- batch: the same resources as a batch (each entry its own transaction); the target is within 2x of the
  transaction.
- PUT: a transaction of N PUTs with ids the client chose, which creates them; then the same Bundle again,
  which updates every one of them (a new version, its index rows replaced).
- load: `python -m service load` of the same N resources (with ids) from an NDJSON file, the time the
  command reports (it includes opening its pool and the ANALYZE at the end); and `write_batch`, the store
  function the loader writes with, called in this process: the floor for writing N resources with indexes.
Each figure is the median of R rounds on a fresh database: empty, or with --preload P a copy of one holding P
generated Organizations (bench/generate.py, written through `write_batch`), so every figure meets a table of that
size. Machines are noisy: compare the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_rest import organizations  # noqa: E402
from bench.common import preload, scratch_database, service_process, unsigned_token  # noqa: E402
from service.db import load_migrations, migrate  # noqa: E402
from service.event_loop import run as run_loop  # noqa: E402
from service.fhir.resource import Submitted  # noqa: E402
from service.pools import create_pool  # noqa: E402
from service.search.catalog import Catalogs  # noqa: E402
from service.search.registry import Registry  # noqa: E402
from service.settings import Settings  # noqa: E402
from service.store.bulk import write_batch  # noqa: E402


def resources(count: int) -> list[dict]:
    found = organizations()
    return [dict(found[index % len(found)]) for index in range(count)]


def bundle(bundle_type: str, orgs: list[dict]) -> bytes:
    entries = [{"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": org,
                "request": {"method": "POST", "url": "Organization"}} for org in orgs]
    return orjson.dumps({"resourceType": "Bundle", "type": bundle_type, "entry": entries})


def put_bundle(orgs: list[dict]) -> bytes:
    ids = [str(uuid.uuid4()) for _ in orgs]
    entries = [{"resource": {**org, "resourceType": "Organization", "id": fhir_id},
                "request": {"method": "PUT", "url": f"Organization/{fhir_id}"}} for org, fhir_id in zip(orgs, ids)]
    return orjson.dumps({"resourceType": "Bundle", "type": "transaction", "entry": entries})


async def post_bundle(base: str, body: bytes, count: int, status: str = "201 Created") -> float:
    token = unsigned_token(["Organization.write"])
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"}
    async with aiohttp.ClientSession(headers=headers) as session:
        started = time.perf_counter()
        async with session.post(f"{base}/fhir", data=body) as response:
            answer = await response.json(content_type=None)
        elapsed = time.perf_counter() - started
    assert response.status == 200, answer
    done = sum(1 for entry in answer["entry"] if entry["response"]["status"] == status)
    assert done == count, f"{done} of {count}: {status}"
    return elapsed


@asynccontextmanager
async def preloaded(count: int) -> AsyncIterator[str | None]:
    """A database holding `count` generated Organizations, for every round to copy; None (start empty) for 0."""
    if not count:
        yield None
        return
    async with scratch_database() as template:
        await preload(template, count)
        yield template


async def http_rounds(bundle_type: str, orgs: list[dict], rounds: int, template: str | None) -> list[float]:
    times = []
    for _ in range(rounds):
        async with scratch_database(template) as database_url, service_process(database_url) as base:
            await post_bundle(base, bundle(bundle_type, orgs[:20]), 20)  # warm the process and its pool
            times.append(await post_bundle(base, bundle(bundle_type, orgs), len(orgs)))
    return times


async def put_rounds(orgs: list[dict], rounds: int, template: str | None) -> tuple[list[float], list[float]]:
    creates, updates = [], []
    for _ in range(rounds):
        async with scratch_database(template) as database_url, service_process(database_url) as base:
            await post_bundle(base, put_bundle(orgs[:20]), 20)
            body = put_bundle(orgs)
            creates.append(await post_bundle(base, body, len(orgs)))
            updates.append(await post_bundle(base, body, len(orgs), "200 OK"))
    return creates, updates


def load_rounds(orgs: list[dict], rounds: int, template: str | None) -> list[float]:
    times = []
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "Organization.ndjson"
        path.write_bytes(b"\n".join(orjson.dumps({**org, "id": str(uuid.uuid4())}) for org in orgs) + b"\n")
        for _ in range(rounds):
            times.append(run_loop(_load(path, template)))
    return times


async def _load(path: Path, template: str | None) -> float:
    async with scratch_database(template) as database_url:
        result = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "service", "load", str(path)], capture_output=True, text=True,
            env={"DATABASE_URL": database_url, "PATH": "/usr/bin:/bin", "FHIR_LOG_LEVEL": "WARNING"}, check=True)
    return float(re.search(r"in ([\d.]+) s:", result.stdout).group(1))


async def store_rounds(orgs: list[dict], rounds: int, template: str | None) -> list[float]:
    times = []
    for _ in range(rounds):
        async with scratch_database(template) as database_url:
            settings = Settings(database_url=database_url)
            pool = await create_pool(database_url, settings)
            try:
                async with pool.acquire() as conn:
                    await migrate(conn, load_migrations())
                    catalogs = Catalogs(Registry.builtin())
                    await write_batch(conn, _with_ids(orgs[:20]), catalogs)  # warm, as the service is
                    batch = _with_ids(orgs)
                    started = time.perf_counter()
                    await write_batch(conn, batch, catalogs)
                    times.append(time.perf_counter() - started)
            finally:
                await pool.close()
    return times


def _with_ids(orgs: list[dict]) -> list[Submitted]:
    return [Submitted.of({**org, "resourceType": "Organization", "id": str(uuid.uuid4())}) for org in orgs]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--preload", type=int, default=0, help="generated Organizations in every round's database")
    args = parser.parse_args()
    orgs = resources(args.entries)

    async with preloaded(args.preload) as template:
        transaction = statistics.median(await http_rounds("transaction", orgs, args.rounds, template))
        batch = statistics.median(await http_rounds("batch", orgs, args.rounds, template))
        put_creates, put_updates = (statistics.median(times) for times in await put_rounds(orgs, args.rounds, template))
        loaded = statistics.median(await asyncio.to_thread(load_rounds, orgs, args.rounds, template))
        floor = statistics.median(await store_rounds(orgs, args.rounds, template))

    print(f"{args.entries:,} new Organizations, median of {args.rounds} rounds, {args.preload:,} preloaded")
    print(f"  transaction   {transaction * 1000:7.0f} ms   (target < 1000 ms)")
    print(f"  batch         {batch * 1000:7.0f} ms   batch / transaction {batch / transaction:.2f} (target <= 2)")
    print(f"  PUT, new ids  {put_creates * 1000:7.0f} ms   PUT of the same again (updates) {put_updates * 1000:.0f} ms")
    print(f"  load          {loaded * 1000:7.0f} ms   transaction / load {transaction / loaded:.2f}")
    print(f"  write_batch   {floor * 1000:7.0f} ms   transaction / write_batch {transaction / floor:.2f}")


if __name__ == "__main__":
    run_loop(main())
