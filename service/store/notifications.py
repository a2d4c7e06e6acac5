"""LISTEN on a channel for as long as a block runs, surviving dropped connections."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

import asyncpg
import structlog

from service.db import Connection

log = structlog.get_logger(__name__)
CONNECTION_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError)
SET_APPLICATION_NAME = "SELECT set_config('application_name', $1, false)"
FIRST_RETRY_SECONDS = 0.05  # then doubled on each failure in a row, up to the caller's retry interval


class Wakeups:
    """Notifications, counted, so that each of several waiters can tell whether one arrived since it
    last looked for work (a shared Event cleared by one waiter would hide it from the others)."""

    def __init__(self) -> None:
        self.count = 0
        self._next = asyncio.Event()

    def notify(self) -> None:
        self.count += 1
        self._next.set()
        self._next = asyncio.Event()

    async def wait(self, seen: int, timeout: float) -> None:
        """Return once there is a notification after the `seen`-th, or after `timeout` seconds."""
        if self.count != seen:
            return
        with suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._next.wait()


def reraise_if_cancelling(exc: BaseException) -> None:
    """A connection error raised while the task is being cancelled is the cancellation itself: re-raise it
    as one, so a background loop that retries connection errors still stops."""
    task = asyncio.current_task()  # None only outside a task, which is not where this runs
    if task is not None and task.cancelling():
        raise asyncio.CancelledError from exc


@asynccontextmanager
async def listening(pool: asyncpg.Pool, channel: str, check_seconds: float) -> AsyncIterator[Wakeups]:
    """Wakeups notified on every NOTIFY on `channel` while the block runs. The listening connection is
    checked every `check_seconds`; a lost one is replaced at once (then with a growing delay, up to
    `check_seconds`), and waiters are woken then too, since a notification may have been missed."""
    wakeups = Wakeups()
    listener = asyncio.create_task(_listen(pool, channel, wakeups, check_seconds))
    try:
        yield wakeups
    finally:
        listener.cancel()
        with suppress(asyncio.CancelledError):
            await listener


async def _listen(pool: asyncpg.Pool, channel: str, wakeups: Wakeups, check_seconds: float) -> None:
    failures = 0  # in a row
    while True:
        listened = asyncio.Event()
        try:
            async with pool.acquire() as conn:
                await _hold(conn, channel, wakeups, check_seconds, listened, restored=failures > 0)
        except CONNECTION_ERRORS as exc:
            reraise_if_cancelling(exc)
            log.warning("listener_lost", channel=channel, error=type(exc).__name__, detail=str(exc))
        failures = 1 if listened.is_set() else failures + 1
        wakeups.notify()
        await asyncio.sleep(min(check_seconds, FIRST_RETRY_SECONDS * 2 ** (failures - 1)))


async def _hold(conn: Connection, channel: str, wakeups: Wakeups, check_seconds: float, listened: asyncio.Event,
                restored: bool) -> None:
    """LISTEN on `conn` until it is lost: closed (the termination listener says so at once) or silent (a
    query every `check_seconds` finds out); raises a connection error then."""
    lost = asyncio.get_running_loop().create_future()

    def on_terminated(_conn: object) -> None:
        if not lost.done():
            lost.set_result(None)

    def on_notify(*_: object) -> None:
        wakeups.notify()

    conn.add_termination_listener(on_terminated)
    try:
        # Named, so an operator (or a test) can tell the listening session in pg_stat_activity.
        await conn.execute(SET_APPLICATION_NAME, f"fhir-reindex-service listen {channel}")
        await conn.add_listener(channel, on_notify)
        listened.set()
        if restored:  # a notification may have come while it was lost
            log.info("listener_restored", channel=channel)
            wakeups.notify()
        while not lost.done():
            if not (await asyncio.wait([lost], timeout=check_seconds))[0]:
                await conn.fetchval("SELECT 1", timeout=check_seconds)
        raise ConnectionResetError("the listening connection was closed")
    finally:
        # A closed connection has left its pool proxy (which then raises InterfaceError), with its listeners.
        with suppress(asyncpg.InterfaceError):
            conn.remove_termination_listener(on_terminated)
            if not conn.is_closed():
                await conn.remove_listener(channel, on_notify)
