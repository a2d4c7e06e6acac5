"""The baseline of bench_rest.py: a minimal aiohttp + asyncpg app doing a REST request's database work.

    DATABASE_URL=... python bench/rest_baseline.py PORT POOL_SIZE

No authentication, validation or extraction. `GET /{type}/{id}` returns the current body by (res_type,
fhir_id). `POST /{type}` and `PUT /{type}/{id}` write, in one transaction, the body (with id and meta)
into `resource` and `resource_version` and COPY the index rows the service writes for it: extracted at
start-up from the benchmark's bodies, chosen by the `X-Bench-Body` header (the body's index in
`bench_rest.bodies`), since extraction is the service's own work.
"""

from __future__ import annotations

import asyncio
import os
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import orjson
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_rest import bodies  # noqa: E402
from service.event_loop import run as run_loop  # noqa: E402
from service.fhir.resource import stamp  # noqa: E402
from service.search.catalog import Catalogs  # noqa: E402
from service.search.registry import Registry  # noqa: E402
from service.store.indexes import TABLE_COLUMNS, IndexRecords, index_records  # noqa: E402

READ = "SELECT body FROM resource WHERE res_type = $1 AND fhir_id = $2"
INSERT = """INSERT INTO resource (res_type, fhir_id, version, last_updated, body) VALUES ($1, $2, 1, $3, $4)
RETURNING res_id, version"""
UPDATE = """UPDATE resource SET version = version + 1, last_updated = $3, body = $4
WHERE res_type = $1 AND fhir_id = $2 RETURNING res_id, version"""
INSERT_VERSION = """INSERT INTO resource_version (res_id, res_type, fhir_id, version, last_updated, method, body)
VALUES ($1, $2, $3, $4, $5, $6, $7)"""
DELETE_ROWS = "WITH " + ", ".join(f"d_{table} AS (DELETE FROM {table} WHERE res_id = $1)"
                                  for table in TABLE_COLUMNS) + " SELECT 1"


def extracted() -> list[IndexRecords]:
    """The index rows of each benchmark body (res_id 0), as the service extracts them."""
    catalog = Catalogs(Registry.builtin()).current
    now = datetime.now(UTC)
    return [index_records(0, body["resourceType"], catalog.index_rows(stamp(body, "x", 1, now))) for body in bodies()]


async def read(request: web.Request) -> web.Response:
    body = await request.app["pool"].fetchval(READ, request.match_info["type"], request.match_info["id"])
    if body is None:
        raise web.HTTPNotFound()
    return web.Response(body=body, content_type="application/fhir+json")


async def write(request: web.Request) -> web.Response:
    res_type, fhir_id = request.match_info["type"], request.match_info.get("id") or str(uuid.uuid4())
    now = datetime.now(UTC)
    body = orjson.dumps(stamp(orjson.loads(await request.read()), fhir_id, 1, now))
    records = request.app["rows"][int(request.headers["X-Bench-Body"])]
    async with request.app["pool"].acquire() as conn, conn.transaction():
        res_id, version = await conn.fetchrow(UPDATE if request.method == "PUT" else INSERT,
                                              res_type, fhir_id, now, body)
        await conn.execute(INSERT_VERSION, res_id, res_type, fhir_id, version, now, request.method, body)
        if request.method == "PUT":
            await conn.execute(DELETE_ROWS, res_id)
        for table, rows in records.items():
            if rows:
                await conn.copy_records_to_table(table, records=[(res_id, *row[1:]) for row in rows],
                                                 columns=TABLE_COLUMNS[table])
    return web.Response(status=201 if request.method == "POST" else 200, body=body,
                        content_type="application/fhir+json")


async def ready(request: web.Request) -> web.Response:
    return web.Response(text="ready")


async def serve(port: int, pool_size: int) -> None:
    """On uvloop, as the service runs, until terminated."""
    app = web.Application()
    app["rows"] = extracted()
    app["pool"] = await asyncpg.create_pool(os.environ["DATABASE_URL"], min_size=2, max_size=pool_size)
    app.router.add_get("/fhir/{type}/{id}", read)
    app.router.add_post("/fhir/{type}", write)
    app.router.add_put("/fhir/{type}/{id}", write)
    app.router.add_get("/readyz", ready)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    await asyncio.Event().wait()


if __name__ == "__main__":
    run_loop(serve(int(sys.argv[1]), int(sys.argv[2])))
