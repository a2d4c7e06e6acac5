"""Test fixtures: a real PostgreSQL (DATABASE_URL, else an embedded one), a migrated template database
per session, a fresh database cloned from it per test, and the real app behind aiohttp's test client.

Authentication: `settings` run the app in hs256 mode with the secret of `tests/tokens.py`, and every test
client made with `aiohttp_client` (so `client` too) sends `admin_token` (a SYSTEM user with every privilege)
on each request unless it is made with its own `headers=` (e.g. `aiohttp_client(app, headers={})`)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from aiohttp.test_utils import BaseTestServer, TestClient

from service.app import create_app
from service.db import load_migrations, migrate
from service.settings import Settings
from tests import tokens

# The third-party resources the tests load (tests/data/README.md); FHIR_TEST_DATA_DIR names another copy.
DATA_DIR = Path(os.environ.get("FHIR_TEST_DATA_DIR") or Path(__file__).resolve().parent / "data")


def with_database(dsn: str, database: str) -> str:
    """The same server DSN pointing at another database (works for host and socket URIs)."""
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{database}"))


# A throwaway server needs no crash safety: these make every commit and CREATE DATABASE cheap.
TEST_SERVER_SETTINGS = {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}


def run_load(database_url: str, *arguments: str) -> subprocess.CompletedProcess[str]:
    """`python -m service load ARGUMENTS` against the database, as an operator runs it."""
    return subprocess.run([sys.executable, "-m", "service", "load", *arguments], capture_output=True, text=True,
                          env={"DATABASE_URL": database_url, "PATH": "/usr/bin:/bin"}, timeout=300)


def ndjson_files(*paths: str) -> list[str]:
    """The NDJSON files of these files or directories of DATA_DIR. A directory's Bundle files are left out:
    Plan-Net's Bundle of custom SearchParameters would change how everything else is indexed and searched."""
    found = []
    for path in (DATA_DIR / name for name in paths):
        found += sorted(path.glob("*.ndjson.gz")) if path.is_dir() else [path]
    return [str(path) for path in found]


@pytest.fixture(scope="session")
def server_dsn() -> Iterator[str]:
    """DSN of the server the tests use, connected to its maintenance database."""
    if url := os.environ.get("DATABASE_URL"):
        yield url
        return
    from service.embedded import EmbeddedPostgres

    with tempfile.TemporaryDirectory(prefix="fhir-test-pg-") as tmp:
        server = EmbeddedPostgres(Path(tmp), TEST_SERVER_SETTINGS)
        yield asyncio.run(server.start())
        asyncio.run(server.stop())


async def _admin(dsn: str, *statements: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


async def _migrate_template(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await migrate(conn, load_migrations())
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def template_database(server_dsn: str) -> Iterator[str]:
    """A migrated database that every test database is cloned from; unique per session."""
    name = f"fhir_tpl_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    asyncio.run(_admin(server_dsn, f'CREATE DATABASE "{name}"'))
    asyncio.run(_migrate_template(with_database(server_dsn, name)))
    yield name
    asyncio.run(_admin(server_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def dataset_template(server_dsn: str, template_database: str) -> Iterator[Callable[..., str]]:
    """`dataset_template(*paths)`: a database with those files or directories of DATA_DIR loaded (by the
    `load` command) and analysed, made once per session and cloned by every test that asks for it."""
    made: dict[tuple[str, ...], str] = {}
    lock = threading.Lock()

    def template(*paths: str) -> str:
        with lock:
            if paths not in made:
                name = f"fhir_tpl_{os.getpid()}_{uuid.uuid4().hex[:6]}"
                asyncio.run(_admin(server_dsn, clone_statement(name, template_database)))
                made[paths] = name
                url = with_database(server_dsn, name)
                result = run_load(url, *ndjson_files(*paths))
                assert result.returncode == 0, result.stderr
                asyncio.run(_admin(url, "ANALYZE"))
            return made[paths]

    yield template
    for name in made.values():
        asyncio.run(_admin(server_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


# What the search modules read: both data sets, in one database per module (a module may write to it).
SEARCH_DATASETS = ("plannet", "synthea-r4-2019")


@pytest.fixture(scope="module")
def search_database(server_dsn: str, dataset_template: Callable[..., str]) -> Iterator[str]:
    """A copy of the session's template holding SEARCH_DATASETS, loaded and analysed; dropped afterwards."""
    name = f"fhir_search_{uuid.uuid4().hex[:12]}"
    asyncio.run(_admin(server_dsn, clone_statement(name, dataset_template(*SEARCH_DATASETS))))
    try:
        yield with_database(server_dsn, name)
    finally:
        asyncio.run(_admin(server_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def clone_statement(name: str, template: str) -> str:
    # FILE_COPY copies the template's files instead of writing every page to the WAL (PostgreSQL 15+'s
    # default); with the test server's settings that is the cheap way to clone a loaded database.
    return f'CREATE DATABASE "{name}" TEMPLATE "{template}" STRATEGY FILE_COPY'


@pytest.fixture
async def database_url(request: pytest.FixtureRequest, server_dsn: str, template_database: str,
                       dataset_template: Callable[..., str]) -> AsyncIterator[str]:
    """A fresh database for the test: migrated and empty, or holding the data its `dataset` marker names."""
    marker = request.node.get_closest_marker("dataset")
    source = await asyncio.to_thread(dataset_template, *marker.args) if marker else template_database
    name = f"fhir_t_{uuid.uuid4().hex[:12]}"
    await _admin(server_dsn, clone_statement(name, source))
    yield with_database(server_dsn, name)
    await _admin(server_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def settings(database_url: str) -> Settings:
    return Settings(database_url=database_url, auth_mode="hs256", hs256_secret=tokens.HS256_SECRET,
                    jwt_issuers=[tokens.ISSUER], jwt_audience=tokens.AUDIENCE, base_path="/fhir", reindex_workers=0)


@pytest.fixture
def admin_token() -> str:
    """An HS256 token for `settings`: user_type SYSTEM, every REST privilege on every type, and `$reindex`."""
    return tokens.hs256(tokens.admin_claims())


@pytest.fixture
def aiohttp_client_cls(admin_token: str) -> type[TestClient]:
    """pytest-aiohttp's hook for the client class: clients send `admin_token` unless given their own headers."""

    class AuthenticatedTestClient(TestClient):
        def __init__(self, server: BaseTestServer, **kwargs: object) -> None:
            kwargs.setdefault("headers", tokens.bearer(admin_token))
            super().__init__(server, **kwargs)  # type: ignore[arg-type]

    return AuthenticatedTestClient


@pytest.fixture
def aiohttp_client(database_url: str, aiohttp_client):
    """pytest-aiohttp's client factory, set up after (so torn down before) the test database: every
    app a test starts is closed before its database is dropped."""
    return aiohttp_client


@pytest.fixture
async def client(aiohttp_client, settings: Settings) -> TestClient:
    return await aiohttp_client(create_app(settings))


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A direct connection to the test database, to check what the app stored."""
    conn = await asyncpg.connect(database_url)
    yield conn
    await conn.close()
