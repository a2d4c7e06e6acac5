"""asyncpg pools: opened once the server answers, with an acquire timeout, and the probes' own connection."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Generator
from contextlib import asynccontextmanager
from contextvars import ContextVar
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg
import asyncpg.pool
import orjson
import structlog

from service.settings import PoolSize, Settings
from service.startup import StartupError

log = structlog.get_logger(__name__)

APPLICATION_NAME = "fhir-reindex-service"
# What the SQL layers take: a connection of their own, or one acquired from the pool (a proxy of one).
Connection = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy

# Worth waiting for: the server is not there yet (a pod's database starting after it, a failover).
# Anything else (a refused login, a missing database, a malformed URL) will not heal by waiting.
TRANSIENT_CONNECT_ERRORS = (OSError, asyncio.TimeoutError, asyncpg.CannotConnectNowError,
                            asyncpg.TooManyConnectionsError)


class PoolExhausted(TimeoutError):
    """No pooled connection became free within the pool's acquire timeout (FHIR_POOL_ACQUIRE_TIMEOUT_MS).

    A TimeoutError, so the background loops that retry connection errors (OSError) retry this too."""

    def __init__(self, timeout_seconds: float) -> None:
        super().__init__(f"no database connection became free within {timeout_seconds * 1000:g} ms")
        self.timeout_seconds = timeout_seconds


class Pool(asyncpg.Pool):
    """asyncpg's pool whose `acquire` waits at most `acquire_timeout` seconds (None: as long as it takes) unless
    told otherwise, so a request never queues without end behind slow ones: it gets PoolExhausted (a 503). Its
    connections are handed out in the order they were asked for (see `_HandOffQueue`)."""

    __slots__ = ("_acquire_timeout",)

    def __init__(self, *args: Any, acquire_timeout: float | None, **kwargs: Any) -> None:
        super().__init__(*args, reset=_reset_session, **kwargs)
        self._acquire_timeout = acquire_timeout

    async def _initialize(self) -> None:
        await super()._initialize()  # type: ignore[misc]
        # Same holders, same order; nothing can acquire before the pool is initialized.
        queue = _HandOffQueue(maxsize=self._maxsize)  # type: ignore[attr-defined]
        for holder in list(self._queue._queue):  # type: ignore[has-type]
            queue.put_nowait(holder)
        self._queue = queue

    async def fetchrow_stateless(self, query: str, *args: Any) -> asyncpg.Record | None:
        """`fetchrow` of a statement that leaves no session state behind (a plain SELECT, no function that
        sets anything): its connection goes back to the pool without the reset statement, a round trip that
        otherwise doubles the time a single-row read holds its connection."""
        async with self.acquire_stateless() as conn:
            return await conn.fetchrow(query, *args)

    @asynccontextmanager
    async def acquire_stateless(self) -> AsyncIterator[Connection]:
        """`acquire` for work that leaves no session state behind when it ends without an error: plain SELECTs,
        or a transaction whose settings are all LOCAL. The connection goes back to the pool without the reset
        statement; after an error it is reset as usual."""
        stateless = None
        try:
            async with self.acquire() as conn:
                yield conn
                stateless = _STATELESS.set(True)  # only once the work succeeded
        finally:
            if stateless is not None:
                _STATELESS.reset(stateless)

    # The stubs name asyncpg's own context class as the result; ours wraps it with the same interface.
    def acquire(self, *, timeout: float | None = None) -> _Acquiring:  # type: ignore[override]
        # The timeout is ours to apply: given one, asyncpg runs each acquire and each release in a task of its own.
        return _Acquiring(super().acquire(), timeout or self._acquire_timeout)


class _HandOffQueue(asyncpg.pool._PoolConnectionHolderQueue):  # type: ignore[name-defined,misc]
    """asyncpg's queue of free connection holders, first in, first served.

    asyncpg's own queue wakes a waiter when a holder comes back, and a newcomer that runs first takes the
    holder: the waiter queues again at the back, and under load some requests waited for many others. Here a
    holder that comes back goes straight to the oldest waiter, and nobody takes a free holder past a waiter."""

    def put_nowait(self, holder: Any) -> None:
        while self._getters:
            waiter = self._getters.popleft()
            if not waiter.done():
                waiter.set_result(holder)
                return
        super().put_nowait(holder)

    async def get(self) -> Any:
        if not self._getters and not self.empty():
            return self.get_nowait()
        waiter = asyncio.get_running_loop().create_future()
        self._getters.append(waiter)
        try:
            return await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.put_nowait(waiter.result())  # handed over as its waiter gave up: to the next one
            elif waiter in self._getters:
                self._getters.remove(waiter)
            raise


class _Acquiring:
    """`async with pool.acquire()` or `await pool.acquire()`, naming an acquire timeout as PoolExhausted."""

    __slots__ = ("_context", "_timeout")

    def __init__(self, context: Any, timeout: float | None) -> None:
        self._context = context
        self._timeout = timeout

    def __await__(self) -> Generator[Any, None, Connection]:
        return self._acquire(entered=False).__await__()

    async def __aenter__(self) -> Connection:
        return await self._acquire(entered=True)

    async def _acquire(self, entered: bool) -> Connection:
        try:
            async with asyncio.timeout(self._timeout):
                connection: Connection = await (self._context.__aenter__() if entered else self._context)
                return connection
        except TimeoutError:
            raise PoolExhausted(self._timeout or 0) from None

    async def __aexit__(self, *exc_info: Any) -> None:
        await self._context.__aexit__(*exc_info)


async def create_pool(dsn: str, settings: Settings, size: PoolSize | None = None,
                      acquire_timeout: float | None = None, name: str = APPLICATION_NAME) -> Pool:
    """A pool of `size` (by default an operator command's), once the server answers: connection failures are
    retried for `database_connect_timeout_seconds`; then, or at once for a permanent failure, a StartupError."""
    size = size or settings.operator_pool()
    where = server_address(dsn)
    deadline = asyncio.get_running_loop().time() + settings.database_connect_timeout_seconds
    delay = 0.25
    while True:
        try:
            return await _open_pool(dsn, size, acquire_timeout, name)
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


async def _open_pool(dsn: str, size: PoolSize, acquire_timeout: float | None, name: str) -> Pool:
    # The keyword arguments asyncpg.create_pool passes by default (it cannot build a subclass itself).
    pool = Pool(dsn, acquire_timeout=acquire_timeout, min_size=size.min_size, max_size=size.max_size,
                max_queries=50000, max_inactive_connection_lifetime=300.0, init=_init_connection, loop=None,
                connection_class=asyncpg.Connection, record_class=asyncpg.Record,
                server_settings=_server_settings(size, name))
    return await pool


def _server_settings(size: PoolSize, name: str) -> dict[str, str]:
    settings = {"application_name": name, "statement_timeout": str(size.statement_timeout_ms)}
    if size.batch:
        # A job's statements run thousands of times on tables a job itself may empty and refill (a rebuild after
        # lost index rows). After five runs PostgreSQL may keep a generic plan costed while a table was empty, a
        # sequential scan of it for each batch's look-up by res_id, which grows with every batch written: a rebuild
        # of 100,000 Organizations took 50 s instead of 16. Planned for its arguments, each run sees the table as
        # it is now; the planning costs about a tenth of a millisecond a statement.
        settings["plan_cache_mode"] = "force_custom_plan"
    return settings


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


# Whether the connection being released ran only a `fetchrow_stateless`. asyncpg releases a connection in a
# task of its own, which starts with a copy of the releasing task's context: this value as it was then.
_STATELESS: ContextVar[bool] = ContextVar("stateless_release", default=False)


async def _reset_session(conn: asyncpg.Connection) -> None:
    """The pool's reset, after asyncpg's own (which rolls back an open transaction): the session's settings,
    locks, cursors and LISTENs, except after a statement that cannot have left any."""
    if not _STATELESS.get() and (query := conn.get_reset_query()):
        await conn.execute(query)


async def _init_connection(conn: asyncpg.Connection) -> None:
    for type_name in ("json", "jsonb"):
        await conn.set_type_codec(
            type_name, schema="pg_catalog", encoder=_encode_json, decoder=orjson.loads, format="text"
        )


def _encode_json(value: Any) -> str:
    return orjson.dumps(value).decode()
