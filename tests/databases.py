"""The PostgreSQL server and template databases of one pytest run, shared by all of xdist's workers.

The controlling process (the only process without xdist) starts the server, an embedded one unless
DATABASE_URL names one, and passes its DSN and the run's id to the workers in their environment. The
templates (the migrated schema, and each combination of data sets a test asks for) are built once per
run by whichever worker needs one first, under an advisory lock that the others wait on, and dropped
with everything else of the run when the controller finishes."""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

# Inherited by the workers: the server's DSN (maintenance database) and the run's id.
DSN_VARIABLE = "FHIR_TEST_SERVER_DSN"
RUN_VARIABLE = "FHIR_TEST_RUN"

# A throwaway server needs no crash safety: these make every commit and CREATE DATABASE cheap.
TEST_SERVER_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


def with_database(dsn: str, database: str) -> str:
    """The same server DSN pointing at another database (works for host and socket URIs)."""
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{database}"))


def clone_statement(name: str, template: str) -> str:
    # FILE_COPY copies the template's files instead of writing every page to the WAL (PostgreSQL 15+'s
    # default); with the test server's settings that is the cheap way to clone a loaded database.
    return f'CREATE DATABASE "{name}" TEMPLATE "{template}" STRATEGY FILE_COPY'


async def admin(dsn: str, *statements: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


class TestRun:
    """What the controlling process owns: the run's id, its server, and the cleanup of both."""

    __test__ = False  # not a test class, whatever its name

    def __init__(self) -> None:
        self.id = uuid.uuid4().hex[:8]
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._server: object | None = None

    def start(self) -> None:
        dsn = os.environ.get("DATABASE_URL")
        if not dsn:
            from service.embedded import EmbeddedPostgres

            self._tmp = tempfile.TemporaryDirectory(prefix="fhir-test-pg-")
            server = EmbeddedPostgres(Path(self._tmp.name), TEST_SERVER_SETTINGS)
            dsn = asyncio.run(server.start())
            self._server = server
        os.environ[DSN_VARIABLE] = dsn
        os.environ[RUN_VARIABLE] = self.id

    def finish(self) -> None:
        from service.embedded import EmbeddedPostgres

        if isinstance(self._server, EmbeddedPostgres):
            asyncio.run(self._server.stop())
        elif dsn := os.environ.get(DSN_VARIABLE):
            asyncio.run(_drop_templates(dsn, self.id))
        if self._tmp is not None:
            self._tmp.cleanup()


def server_dsn() -> str:
    return os.environ[DSN_VARIABLE]


def template_name(*parts: str) -> str:
    """The run's template for these parts: the same name in every worker, short enough for PostgreSQL."""
    digest = hashlib.sha1("\0".join(parts).encode()).hexdigest()[:12]
    return f"fhir_tpl_{os.environ[RUN_VARIABLE]}_{digest}"


async def shared_database(name: str, build: Callable[[str], Awaitable[None]]) -> str:
    """Database `name`, built by `build(temporary_name)` unless a worker already made it. The build runs
    under a temporary name renamed at the end, so a half-built database is never taken for a template."""
    dsn = server_dsn()
    conn = await asyncpg.connect(dsn)
    try:
        # Session-level lock: held until the connection closes, also when the build fails.
        await conn.execute("SELECT pg_advisory_lock(hashtext($1))", name)
        if await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name) is None:
            building = f"{name}_new"
            await conn.execute(f'DROP DATABASE IF EXISTS "{building}"')
            await build(building)
            await conn.execute(f'ALTER DATABASE "{building}" RENAME TO "{name}"')
    finally:
        await conn.close()
    return name


async def _drop_templates(dsn: str, run: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        names = await conn.fetch("SELECT datname FROM pg_database WHERE datname LIKE $1", f"fhir_tpl_{run}_%")
        for (name,) in names:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()
