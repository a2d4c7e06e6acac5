"""Migrations: recorded, idempotent, safe when replicas start at once, refused when edited."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid

import asyncpg
import pytest

from service.app import create_app
from service.db import MigrationError, load_migrations, migrate
from tests.databases import with_database


@pytest.fixture
async def empty_database_url(server_dsn):
    name = f"fhir_empty_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(server_dsn)
    await admin.execute(f'CREATE DATABASE "{name}"')
    yield with_database(server_dsn, name)
    await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.close()


async def test_two_apps_start_concurrently_on_an_empty_database(aiohttp_client, settings, empty_database_url):
    shared = settings.model_copy(update={"database_url": empty_database_url})
    first, second = await asyncio.gather(aiohttp_client(create_app(shared)), aiohttp_client(create_app(shared)))
    for client in (first, second):
        assert (await client.get("/readyz")).status == 200
    conn = await asyncpg.connect(empty_database_url)
    try:
        versions = [row[0] for row in await conn.fetch("SELECT version FROM schema_migration ORDER BY version")]
    finally:
        await conn.close()
    assert versions == [migration.version for migration in load_migrations()]


async def test_migrate_is_idempotent_and_refuses_edited_migrations(db):
    migrations = load_migrations()
    assert await migrate(db, migrations) == []
    edited = [dataclasses.replace(migrations[0], sql=migrations[0].sql + "\n-- edited")] + migrations[1:]
    with pytest.raises(MigrationError, match="changed after it was applied"):
        await migrate(db, edited)
