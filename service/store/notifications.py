"""LISTEN on a channel for as long as a block runs, surviving dropped connections."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

import asyncpg
import structlog

log = structlog.get_logger(__name__)
CONNECTION_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError)


def reraise_if_cancelling(exc: BaseException) -> None:
    """A connection error raised while the task is being cancelled is the cancellation itself: re-raise it
    as one, so a background loop that retries connection errors still stops."""
    task = asyncio.current_task()  # None only outside a task, which is not where this runs
    if task is not None and task.cancelling():
        raise asyncio.CancelledError from exc


@asynccontextmanager
async def listening(pool: asyncpg.Pool, channel: str, retry_seconds: float) -> AsyncIterator[asyncio.Event]:
    """An Event set on every NOTIFY on `channel` while the block runs. A dropped listening connection is
    replaced after `retry_seconds`; the event is set then too, since a notification may have been missed."""
    event = asyncio.Event()
    listener = asyncio.create_task(_listen(pool, channel, event, retry_seconds))
    try:
        yield event
    finally:
        listener.cancel()
        with suppress(asyncio.CancelledError):
            await listener


async def _listen(pool: asyncpg.Pool, channel: str, event: asyncio.Event, retry_seconds: float) -> None:
    def on_notify(*_: object) -> None:
        event.set()

    while True:
        try:
            async with pool.acquire() as conn:
                await conn.add_listener(channel, on_notify)
                try:
                    await asyncio.Future()  # until cancelled or the connection fails
                finally:
                    if not conn.is_closed():  # a dead connection takes its listener with it
                        await conn.remove_listener(channel, on_notify)
        except CONNECTION_ERRORS as exc:
            reraise_if_cancelling(exc)
            log.warning("listener_failed", channel=channel, error=type(exc).__name__, detail=str(exc))
            await asyncio.sleep(retry_seconds)
            event.set()
