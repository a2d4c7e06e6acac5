"""Create, read, update and delete of resources: every SQL statement of the REST interactions."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from uuid import uuid4

import asyncpg
import orjson

from service.db import Connection
from service.fhir.errors import FhirError
from service.fhir.instant import now_ms
from service.fhir.resource import Submitted
from service.pools import Pool
from service.search.catalog import Catalog, Catalogs, SearchParameterChange
from service.search.extractor import current as current_extractor
from service.search.param_hash import sp_hash
from service.search.rows import IndexRows, fingerprint
from service.store.indexes import index_records, read_index_rows, update_indexes, write_rows
from service.store.search_parameters import catalog_for_write, record_change, refresh_catalog

SEARCH_PARAMETER = "SearchParameter"

Method = Literal["POST", "PUT", "DELETE"]

SELECT_CURRENT = """
SELECT res_id, version, last_updated, deleted, body FROM resource WHERE res_type = $1 AND fhir_id = $2"""
SELECT_CURRENT_FOR_UPDATE = SELECT_CURRENT + " FOR UPDATE"
# A new resource and its first version in one statement (one round trip); nothing when the id is taken.
INSERT_RESOURCE = """
WITH inserted AS (
    INSERT INTO resource (res_type, fhir_id, version, last_updated, deleted, body, index_gen, index_hash,
                          index_extractor)
    VALUES ($1, $2, 1, $3, false, $4, $5, $6, $7)
    ON CONFLICT (res_type, fhir_id) DO NOTHING
    RETURNING res_id)
INSERT INTO resource_version (res_id, res_type, fhir_id, version, last_updated, deleted, method, body)
SELECT res_id, $1, $2, 1, $3, false, $8, $4 FROM inserted
RETURNING res_id"""
# The next version of a resource, current row and history row, in one statement.
UPDATE_RESOURCE = """
WITH updated AS (
    UPDATE resource SET version = $2, last_updated = $3, deleted = $4, body = $5, index_gen = $6, index_hash = $7,
        index_extractor = $8
    WHERE res_id = $1)
INSERT INTO resource_version (res_id, res_type, fhir_id, version, last_updated, deleted, method, body)
VALUES ($1, $9, $10, $2, $3, $4, $11, $5)"""
SET_INDEXED = "UPDATE resource SET index_gen = $2, index_hash = $3, index_extractor = $4 WHERE res_id = $1"
SELECT_VERSION = """
SELECT v.version, v.last_updated, v.deleted, v.body
FROM resource r JOIN resource_version v ON v.res_id = r.res_id
WHERE r.res_type = $1 AND r.fhir_id = $2 AND v.version = $3"""
SET_LOCK_TIMEOUT = "SELECT set_config('lock_timeout', $1, true)"
EXTRACTOR = current_extractor().number  # recorded with the rows of every write


@dataclass(frozen=True, slots=True)
class Version:
    """One stored version of a resource; `body` is None for a deletion."""

    res_type: str
    fhir_id: str
    version: int
    last_updated: datetime
    deleted: bool
    body: bytes | None


@dataclass(frozen=True, slots=True)
class WriteResult:
    version: Version
    created: bool = False
    changed: bool = True


class ResourceStore:
    """The REST interactions on one pool; each write, index rows included, is one transaction.

    Every write indexes with the catalog of the change log's latest generation, checked inside its
    transaction (store/search_parameters.py `catalog_for_write`), so a replica whose catalog lags never
    writes rows of an older generation. Writing a SearchParameter also logs the change of the registry;
    this replica's catalog is refreshed before the write returns (other replicas follow on the NOTIFY).
    """

    def __init__(self, pool: Pool, lock_timeout_ms: int, catalogs: Catalogs) -> None:
        self.pool = pool
        self._lock_timeout = f"{lock_timeout_ms}ms"
        self._catalogs = catalogs

    @property
    def catalogs(self) -> Catalogs:
        return self._catalogs

    async def read(self, res_type: str, fhir_id: str) -> Version | None:
        row = await self.pool.fetchrow_stateless(SELECT_CURRENT, res_type, fhir_id)
        return None if row is None else version_of(res_type, fhir_id, row)

    async def vread(self, res_type: str, fhir_id: str, version: int) -> Version | None:
        row = await self.pool.fetchrow_stateless(SELECT_VERSION, res_type, fhir_id, version)
        return None if row is None else version_of(res_type, fhir_id, row)

    async def create(self, resource: Submitted) -> WriteResult:
        res_type, fhir_id = resource.values["resourceType"], str(uuid4())
        async with self.pool.acquire() as conn, conn.transaction():
            written = await self.insert(conn, res_type, fhir_id, resource, "POST")
        assert written is not None, "a fresh UUID cannot collide"
        return await self.after_write(WriteResult(written, created=True))

    async def update(self, resource: Submitted, fhir_id: str, if_match: int | None) -> WriteResult:
        async with self.write_transaction() as conn:
            result = await self.update_in(conn, resource, fhir_id, if_match)
        return await self.after_write(result)

    async def delete(self, res_type: str, fhir_id: str, if_match: int | None) -> WriteResult | None:
        """Soft-delete: a new version with no body. None when there is no such resource."""
        async with self.write_transaction() as conn:
            current = await conn.fetchrow(SELECT_CURRENT_FOR_UPDATE, res_type, fhir_id)
            if current is None:
                return None
            result = await self.delete_in(conn, current, res_type, fhir_id, if_match)
        return await self.after_write(result)

    @asynccontextmanager
    async def write_transaction(self) -> AsyncIterator[Connection]:
        """A connection in a transaction whose row locks wait at most FHIR_LOCK_TIMEOUT_MS."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(SET_LOCK_TIMEOUT, self._lock_timeout)
            yield conn

    async def update_in(self, conn: Connection, resource: Submitted, fhir_id: str, if_match: int | None) -> WriteResult:
        """An update (a create when there is no such resource) in the caller's write transaction."""
        res_type = resource.values["resourceType"]
        current = await conn.fetchrow(SELECT_CURRENT_FOR_UPDATE, res_type, fhir_id)
        if current is None:
            check_version(if_match, None, res_type, fhir_id)
            written = await self.insert(conn, res_type, fhir_id, resource, "PUT")
            if written is not None:
                return WriteResult(written, created=True)
            # Another request created it between our read and insert; update that one instead.
            current = await conn.fetchrow(SELECT_CURRENT_FOR_UPDATE, res_type, fhir_id)
            assert current is not None, "an insert that collided found a row to update"
        check_version(if_match, current["version"], res_type, fhir_id)
        written = await self.new_version(conn, current, res_type, fhir_id, resource, "PUT")
        return WriteResult(written, created=bool(current["deleted"]))

    async def delete_in(self, conn: Connection, current: asyncpg.Record, res_type: str, fhir_id: str,
                        if_match: int | None) -> WriteResult:
        """Delete the locked row `current` in the caller's write transaction (nothing when it is deleted already)."""
        check_version(if_match, current["version"], res_type, fhir_id)
        if current["deleted"]:
            return WriteResult(version_of(res_type, fhir_id, current), changed=False)
        return WriteResult(await self.new_version(conn, current, res_type, fhir_id, None, "DELETE"))

    async def reindex(self, res_type: str, fhir_id: str, write: bool) -> tuple[IndexRows, IndexRows] | None:
        """The resource's stored and freshly extracted index rows (None: no such live resource); with
        `write`, the stored ones are brought up to date in the same transaction (instance $reindex)."""
        async with self.pool.acquire() as conn, conn.transaction():
            catalog = await catalog_for_write(conn, self._catalogs, False) if write else self._catalogs.current
            codes = {sp_hash(res_type, p.definition.code): p.definition.code
                     for p in catalog.registry.parameters(res_type)}
            row = await conn.fetchrow(SELECT_CURRENT_FOR_UPDATE if write else SELECT_CURRENT, res_type, fhir_id)
            if row is None or row["deleted"]:
                return None
            old = await read_index_rows(conn, row["res_id"], codes)
            new = catalog.index_rows(orjson.loads(row["body"]))
            if write:
                await update_indexes(conn, row["res_id"], index_records(row["res_id"], res_type, new))
                await conn.execute(SET_INDEXED, row["res_id"], catalog.generation, fingerprint(new), EXTRACTOR)
        return old, new

    async def insert(
        self, conn: Connection, res_type: str, fhir_id: str, resource: Submitted, method: Method,
    ) -> Version | None:
        last_updated = now_ms()
        stamped, body = resource.stamped(fhir_id, 1, last_updated)
        # Checked before any write: a resource that cannot be indexed or used is not stored.
        catalog = await catalog_for_write(conn, self._catalogs, res_type == SEARCH_PARAMETER)
        rows, change = _indexing(catalog, stamped)
        res_id = await conn.fetchval(INSERT_RESOURCE, res_type, fhir_id, last_updated, body, catalog.generation,
                                     fingerprint(rows), EXTRACTOR, method)
        if res_id is None:
            return None
        await write_rows(conn, index_records(res_id, res_type, rows))  # a new res_id has no rows yet
        if res_type == SEARCH_PARAMETER:
            await record_change(conn, res_id, change)
        return Version(res_type, fhir_id, 1, last_updated, False, body)

    async def new_version(
        self, conn: Connection, current: asyncpg.Record, res_type: str, fhir_id: str,
        resource: Submitted | None, method: Method,
    ) -> Version:
        """A new version (a deletion when `resource` is None) and the index rows that go with it."""
        res_id, version, last_updated = current["res_id"], current["version"] + 1, now_ms()
        deleted = resource is None
        stamped, body = (None, None) if resource is None else resource.stamped(fhir_id, version, last_updated)
        catalog = await catalog_for_write(conn, self._catalogs, res_type == SEARCH_PARAMETER)
        rows, change = (IndexRows(), None) if stamped is None else _indexing(catalog, stamped)
        index_hash = None if deleted else fingerprint(rows)  # a deleted resource has no rows at all
        await conn.execute(UPDATE_RESOURCE, res_id, version, last_updated, deleted, body, catalog.generation,
                           index_hash, EXTRACTOR, res_type, fhir_id, method)
        records = index_records(res_id, res_type, rows)
        if deleted:  # a deleted resource matches no search, not even `:missing`
            records["idx_missing"].clear()
        await update_indexes(conn, res_id, records)
        if res_type == SEARCH_PARAMETER:
            await record_change(conn, res_id, change)
        return Version(res_type, fhir_id, version, last_updated, deleted, body)

    async def after_write(self, result: WriteResult) -> WriteResult:
        if result.version.res_type == SEARCH_PARAMETER:
            await refresh_catalog(self.pool, self._catalogs)
        return result


def check_version(if_match: int | None, current: int | None, res_type: str, fhir_id: str) -> None:
    if if_match is not None and if_match != current:
        found = "does not exist" if current is None else f"is at version {current}"
        raise FhirError(
            412, f"If-Match version {if_match} does not match: {res_type}/{fhir_id} {found}", code="conflict"
        )


def version_of(res_type: str, fhir_id: str, row: asyncpg.Record) -> Version:
    return Version(res_type, fhir_id, row["version"], row["last_updated"], row["deleted"], row["body"])


def _indexing(catalog: Catalog, stamped: dict[str, Any]) -> tuple[IndexRows, SearchParameterChange | None]:
    rows = catalog.index_rows(stamped)
    is_search_parameter = stamped["resourceType"] == SEARCH_PARAMETER
    return rows, catalog.search_parameter_change(stamped) if is_search_parameter else None
