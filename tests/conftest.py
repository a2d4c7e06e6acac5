"""Test fixtures: a real PostgreSQL (DATABASE_URL, else an embedded one) and template databases shared by
the run's xdist workers (tests/databases.py), a fresh database cloned from one per test, and the real app
behind aiohttp's test client.

Authentication: `settings` run the app in hs256 mode with the secret of `tests/tokens.py`, and every test
client made with `aiohttp_client` (so `client` too) sends `admin_token` (a SYSTEM user with every privilege)
on each request unless it is made with its own `headers=` (e.g. `aiohttp_client(app, headers={})`)."""

from __future__ import annotations

import asyncio
import gzip
import itertools
import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import asyncpg
import pytest
from aiohttp.test_utils import BaseTestServer, TestClient

from service.app import create_app
from service.db import load_migrations, migrate
from service.settings import Settings
from tests import databases, tokens
from tests.databases import TestRun, admin, clone_statement, shared_database, template_name, with_database

# The third-party resources the tests load (tests/data/README.md); FHIR_TEST_DATA_DIR names another copy.
DATA_DIR = Path(os.environ.get("FHIR_TEST_DATA_DIR") or Path(__file__).resolve().parent / "data")


def run_service(database_url: str, *argv: str) -> subprocess.CompletedProcess[str]:
    """`python -m service ARGV` against the database, as an operator runs it."""
    return subprocess.run([sys.executable, "-m", "service", *argv], capture_output=True, text=True,
                          env={"DATABASE_URL": database_url, "PATH": "/usr/bin:/bin"}, timeout=300)


def run_load(database_url: str, *arguments: str) -> subprocess.CompletedProcess[str]:
    """`python -m service load ARGUMENTS`."""
    return run_service(database_url, "load", *arguments)


def ndjson_files(*paths: str) -> list[str]:
    """The NDJSON files of these files or directories of DATA_DIR. A directory's Bundle files are left out:
    Plan-Net's Bundle of custom SearchParameters would change how everything else is indexed and searched."""
    found = []
    for path in (DATA_DIR / name for name in paths):
        found += sorted(path.glob("*.ndjson.gz")) if path.is_dir() else [path]
    return [str(path) for path in found]


def first_lines(paths: tuple[str, ...], into: Path) -> list[str]:
    """As `ndjson_files`, where `FILE:N` stands for the first N lines of FILE (written to a file in `into`)."""
    found = []
    for number, path in enumerate(paths):
        name, _, count = path.partition(":")
        if not count:
            found += ndjson_files(name)
            continue
        with gzip.open(DATA_DIR / name, "rb") as source:
            part = into / f"{number}.ndjson"
            part.write_bytes(b"".join(itertools.islice(source, int(count))))
        found.append(str(part))
    return found


def pytest_configure(config: pytest.Config) -> None:
    # xdist's workers inherit the server and the run's id from the controlling process's environment.
    if not hasattr(config, "workerinput"):
        run = TestRun()
        run.start()
        config.stash[TEST_RUN] = run


def pytest_unconfigure(config: pytest.Config) -> None:
    if run := config.stash.get(TEST_RUN, None):
        run.finish()


TEST_RUN = pytest.StashKey[TestRun]()


@pytest.fixture(scope="session")
def server_dsn() -> str:
    """DSN of the run's server, connected to its maintenance database."""
    return databases.server_dsn()


async def _migrated(name: str) -> None:
    await admin(databases.server_dsn(), f'CREATE DATABASE "{name}"')
    conn = await asyncpg.connect(with_database(databases.server_dsn(), name))
    try:
        await migrate(conn, load_migrations())
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def template_database() -> str:
    """The run's migrated, empty database, that every test database is cloned from."""
    return asyncio.run(shared_database(template_name(), _migrated))


@pytest.fixture(scope="session")
def dataset_template(template_database: str) -> Callable[..., str]:
    """`dataset_template(*paths)`: a database with those files or directories of DATA_DIR loaded (by the
    `load` command) and analysed, made once per run and cloned by every test that asks for it."""

    async def load(name: str, paths: tuple[str, ...]) -> None:
        dsn = databases.server_dsn()
        await admin(dsn, clone_statement(name, template_database))
        url = with_database(dsn, name)
        with tempfile.TemporaryDirectory(prefix="fhir-test-data-") as tmp:
            result = await asyncio.to_thread(run_load, url, *first_lines(paths, Path(tmp)))
        assert result.returncode == 0, result.stderr
        await admin(url, "ANALYZE")

    def template(*paths: str) -> str:
        return asyncio.run(shared_database(template_name(*paths), lambda name: load(name, paths)))

    return template


# What the search modules read: both data sets, in one database per module (a module may write to it).
SEARCH_DATASETS = ("plannet", "synthea-r4-2019")


@pytest.fixture(scope="module")
def search_database(server_dsn: str, dataset_template: Callable[..., str]) -> Iterator[str]:
    """A copy of the run's template holding SEARCH_DATASETS, loaded and analysed; dropped afterwards."""
    name = f"fhir_search_{uuid.uuid4().hex[:12]}"
    asyncio.run(admin(server_dsn, clone_statement(name, dataset_template(*SEARCH_DATASETS))))
    try:
        yield with_database(server_dsn, name)
    finally:
        asyncio.run(admin(server_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
async def database_url(request: pytest.FixtureRequest, server_dsn: str, template_database: str,
                       dataset_template: Callable[..., str]) -> AsyncIterator[str]:
    """A fresh database for the test: migrated and empty, or holding the data its `dataset` marker names."""
    marker = request.node.get_closest_marker("dataset")
    source = await asyncio.to_thread(dataset_template, *marker.args) if marker else template_database
    name = f"fhir_t_{uuid.uuid4().hex[:12]}"
    await admin(server_dsn, clone_statement(name, source))
    yield with_database(server_dsn, name)
    await admin(server_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


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
