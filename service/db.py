"""The database a process works with: the server (DATABASE_URL or embedded), its pools, and the migrations."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources

import asyncpg
import structlog

from service.embedded import EmbeddedPostgres
from service.pools import APPLICATION_NAME, Connection, Pool, create_pool
from service.settings import PoolSize, Settings
from service.startup import StartupError

__all__ = ["Connection", "Database", "ServiceDatabase", "open_database", "open_service_database"]

log = structlog.get_logger(__name__)

# Arbitrary constant: every replica takes this advisory lock around migrations, so two pods starting at
# once apply them one after the other.
MIGRATION_LOCK_KEY = 7_461_726_964_657_801

CREATE_MIGRATION_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migration (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)"""
LOCK_MIGRATIONS = "SELECT pg_advisory_xact_lock($1)"
SELECT_APPLIED = "SELECT version, checksum FROM schema_migration"
RECORD_MIGRATION = "INSERT INTO schema_migration (version, name, checksum) VALUES ($1, $2, $3)"
SELECT_SCHEMA_VERSION = "SELECT coalesce(max(version), 0) FROM schema_migration"


class MigrationError(StartupError):
    """A recorded migration differs from the file shipped with this version."""

    def __init__(self, message: str) -> None:
        super().__init__("migration_changed", message)


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations() -> list[Migration]:
    """The numbered `NNNN_name.sql` files of the `sql/` directory, in order."""
    found = []
    for entry in resources.files("service.sql").iterdir():
        if entry.name.endswith(".sql"):
            number, _, rest = entry.name.partition("_")
            found.append(Migration(int(number), rest.removesuffix(".sql"), entry.read_text()))
    return sorted(found, key=lambda migration: migration.version)


async def migrate(conn: Connection, migrations: list[Migration]) -> list[Migration]:
    """Apply the migrations not yet recorded, under an advisory lock; return the ones applied."""
    applied_now = []
    async with conn.transaction():
        await conn.execute(LOCK_MIGRATIONS, MIGRATION_LOCK_KEY)
        # A migration may rewrite or index a large table: it is not bound by the pool's statement timeout.
        await conn.execute("SET LOCAL statement_timeout = 0")
        await conn.execute(CREATE_MIGRATION_TABLE)
        recorded = {row["version"]: row["checksum"] for row in await conn.fetch(SELECT_APPLIED)}
        for migration in migrations:
            checksum = recorded.get(migration.version)
            if checksum is None:
                await conn.execute(migration.sql)
                await conn.execute(RECORD_MIGRATION, migration.version, migration.name, migration.checksum)
                applied_now.append(migration)
            elif checksum != migration.checksum:
                raise MigrationError(
                    f"migration {migration.version} ({migration.name}) was changed after it was applied")
    for migration in applied_now:
        log.info("migration_applied", version=migration.version, name=migration.name)
    return applied_now


async def schema_version(conn: Connection | asyncpg.Pool) -> int:
    version: int = await conn.fetchval(SELECT_SCHEMA_VERSION)
    return version


@dataclass(frozen=True, slots=True)
class Database:
    """An operator command's database: one pool, migrated."""

    pool: Pool
    schema_version: int  # the newest migration this code ships


@dataclass(frozen=True, slots=True)
class ServiceDatabase:
    """The server's database: requests, the job engine and the probes each have their own connections, so
    a busy job never takes what requests need, and slow searches holding every request connection do
    not make the replica unready."""

    requests: Pool
    jobs: Pool
    probes: Pool
    schema_version: int


@asynccontextmanager
async def open_database(settings: Settings) -> AsyncIterator[Database]:
    """Embedded Postgres when no DATABASE_URL is set, one pool, the migrations applied."""
    async with _server(settings) as dsn, _pool(dsn, settings, settings.operator_pool()) as pool:
        yield Database(pool, await _migrate(pool))


@asynccontextmanager
async def open_service_database(settings: Settings) -> AsyncIterator[ServiceDatabase]:
    """As `open_database`, with the request pool (its acquire timeout gives 503s instead of queues), the job
    engine's pool, and one connection for the probes."""
    acquire_timeout = settings.pool_acquire_timeout_ms / 1000
    async with _server(settings) as dsn, _pool(dsn, settings, settings.request_pool(), acquire_timeout) as requests:
        version = await _migrate(requests)
        # Named apart, so an operator (and a test) tells the job engine's statements from requests'.
        async with (_pool(dsn, settings, settings.job_pool(), name=f"{APPLICATION_NAME} jobs") as jobs,
                    _pool(dsn, settings, settings.probe_pool(), name=f"{APPLICATION_NAME} probes") as probes):
            yield ServiceDatabase(requests, jobs, probes, version)


@asynccontextmanager
async def _server(settings: Settings) -> AsyncIterator[str]:
    """The database URL: DATABASE_URL, or an embedded Postgres's, started for the block."""
    if settings.database_url is not None:
        yield settings.database_url
        return
    embedded = EmbeddedPostgres(settings.data_dir)
    uri = await embedded.start()
    try:
        yield uri
    finally:
        await embedded.stop()


@asynccontextmanager
async def _pool(dsn: str, settings: Settings, size: PoolSize, acquire_timeout: float | None = None,
                name: str = APPLICATION_NAME) -> AsyncIterator[Pool]:
    pool = await create_pool(dsn, settings, size, acquire_timeout, name)
    try:
        yield pool
    finally:
        await pool.close()


async def _migrate(pool: Pool) -> int:
    """Apply the pending migrations; the schema version this code expects."""
    migrations = load_migrations()
    async with pool.acquire() as conn:
        await migrate(conn, migrations)
    return migrations[-1].version
