"""Shared plumbing for the benchmarks: a scratch database, the service in a subprocess, test data."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg

from bench.generate import batches
from service.db import load_migrations, migrate
from service.fhir.resource import Submitted
from service.search.catalog import Catalogs
from service.search.registry import Registry
from service.store.bulk import write_batch

DATA_DIR = Path(os.environ.get("FHIR_BENCH_DATA_DIR", Path(__file__).resolve().parents[1] / "tests" / "data"))
SERVER_DSN = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def ndjson_lines(*relative: str) -> Iterator[bytes]:
    for name in relative:
        path = DATA_DIR / name
        for file in sorted(path.glob("*.ndjson.gz")) if path.is_dir() else [path]:
            with gzip.open(file, "rb") as handle:
                yield from (line for line in handle if line.strip())


def unsigned_token(roles: list[str]) -> str:
    def part(obj: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()
    claims = {"user_id": "bench", "user_type": "SYSTEM", "realm_access": {"roles": roles},
              "exp": int(time.time()) + 3600}
    return f"{part({'alg': 'none'})}.{part(claims)}."


@asynccontextmanager
async def scratch_database(template: str | None = None) -> AsyncIterator[str]:
    """A fresh database on the server of DATABASE_URL (default: the local one): empty, or a copy of the
    database of the URL `template` (which nothing may be connected to)."""
    name = f"fhir_bench_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(SERVER_DSN)
    source = f' TEMPLATE "{urlsplit(template).path.lstrip("/")}"' if template else ""
    await admin.execute(f'CREATE DATABASE "{name}"{source}')
    try:
        yield urlunsplit(urlsplit(SERVER_DSN)._replace(path=f"/{name}"))
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def kept_database(name: str | None) -> str | None:
    """The URL of the database `name` on the server of DATABASE_URL (None for None)."""
    return urlunsplit(urlsplit(SERVER_DSN)._replace(path=f"/{name}")) if name else None


async def create_database(name: str) -> None:
    admin = await asyncpg.connect(SERVER_DSN)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()


async def preload(database_url: str, count: int, batch_size: int = 5000) -> None:
    """Migrate the database and write `count` generated Organizations into it through the loader's own
    `write_batch`, then VACUUM ANALYZE, so that what is measured next meets a settled table of that size."""
    conn = await asyncpg.connect(database_url)
    try:
        await migrate(conn, load_migrations())
        catalogs = Catalogs(Registry.builtin())
        for batch in batches("Organization", count, batch_size):
            result = await write_batch(conn, [Submitted.of(item) for item in batch], catalogs)
            assert not result.rejected, result.rejected[:3]
        if count:
            await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@asynccontextmanager
async def service_process(database_url: str, **env: str) -> AsyncIterator[str]:
    """`python -m service` on a free port; yields its base URL once it is ready."""
    environment = {"DATABASE_URL": database_url, "FHIR_HOST": "127.0.0.1", "FHIR_AUTH_MODE": "unsigned",
                   "FHIR_LOG_LEVEL": "WARNING", **env}
    async with server_process(lambda port: ["-m", "service"], FHIR_PORT="{port}", **environment) as base:
        yield base


@asynccontextmanager
async def server_process(arguments: Callable[[int], list[str]], **env: str) -> AsyncIterator[str]:
    """`python *arguments(port)` on a free port, with `env` added ("{port}" in a value becomes the port);
    yields its base URL once its `/readyz` answers 200."""
    port = free_port()
    environment = {**os.environ, **{name: value.replace("{port}", str(port)) for name, value in env.items()}}
    process = subprocess.Popen([sys.executable, *arguments(port)], env=environment,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        await _wait_ready(base)
        yield base
    finally:
        process.terminate()
        await asyncio.to_thread(process.wait, 15)


async def _wait_ready(base: str) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(300):
            try:
                async with session.get(f"{base}/readyz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError("the service did not become ready")


async def run_concurrently(count: int, concurrency: int, operation) -> float:
    """Run `operation(i)` for i in range(count) with `concurrency` in flight; return operations/s."""
    queue = iter(range(count))

    async def worker() -> None:
        for index in queue:
            await operation(index)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return count / (time.perf_counter() - started)
