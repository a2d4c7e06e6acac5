"""Bulk writes through COPY: many resources per transaction, client ids kept (update semantics)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg

from service.db import Connection
from service.fhir.errors import FhirError
from service.fhir.instant import now_ms
from service.fhir.resource import Submitted
from service.search.catalog import Catalog, Catalogs, SearchParameterChange
from service.search.rows import IndexRows, fingerprint
from service.store.indexes import TABLE_COLUMNS, IndexRecords, index_records, replace_indexes
from service.store.resources import EXTRACTOR, SEARCH_PARAMETER
from service.store.search_parameters import catalog_for_write, record_change

# Rows are locked as the sort emits them, in res_id order, the order in which a reindex batch reads them:
# two writers of many rows that both go up by res_id wait for each other instead of deadlocking. A writer
# taking rows in another order still can: the caller retries the batch (it was rolled back whole).
SELECT_EXISTING_FOR_UPDATE = """
SELECT r.res_id, r.res_type, r.fhir_id, r.version
FROM resource r JOIN unnest($1::text[], $2::text[]) AS k (res_type, fhir_id)
  ON r.res_type = k.res_type AND r.fhir_id = k.fhir_id
ORDER BY r.res_id
FOR UPDATE OF r"""
ALLOCATE_RES_IDS = "SELECT nextval(pg_get_serial_sequence('resource', 'res_id')) FROM generate_series(1, $1)"
UPDATE_EXISTING = """
UPDATE resource r SET version = u.version, last_updated = $5, deleted = false, body = u.body, index_gen = $6,
    index_hash = u.index_hash, index_extractor = $7
FROM unnest($1::bigint[], $2::integer[], $3::bytea[], $4::bigint[]) AS u (res_id, version, body, index_hash)
WHERE r.res_id = u.res_id"""
RESOURCE_COPY_COLUMNS = ("res_id", "res_type", "fhir_id", "version", "last_updated", "deleted", "body", "index_gen",
                         "index_hash", "index_extractor")
ANALYZE_TABLES = ("resource", *TABLE_COLUMNS)
VERSION_COPY_COLUMNS = ("res_id", "res_type", "fhir_id", "version", "last_updated", "deleted", "method", "body")
# COPY records, in the order of the columns above.
ResourceRecord = tuple[int, str, str, int, datetime, bool, bytes, int, int, int]
VersionRecord = tuple[int, str, str, int, datetime, bool, str, bytes]


@dataclass(frozen=True, slots=True)
class BatchResult:
    created: int
    updated: int
    rejected: list[str]  # `Type/id: reason` of resources that could not be indexed (not written)
    search_parameters: int  # SearchParameters written: the catalog needs a refresh


@dataclass(frozen=True, slots=True)
class Prepared:
    """A version to write with others, stamped and indexed before anything is written: a new resource
    (`res_id` None: inserted under a fresh id) or a new version of the row `res_id`."""

    res_type: str
    fhir_id: str
    version: int
    body: bytes
    rows: IndexRows
    change: SearchParameterChange | None
    method: str
    res_id: int | None


@dataclass
class _Batch:
    """A batch's rows, prepared in memory before any write."""

    inserts: list[ResourceRecord] = field(default_factory=list)
    updates: list[tuple[int, int, bytes, int]] = field(default_factory=list)  # res_id, version, body, index_hash
    versions: list[VersionRecord] = field(default_factory=list)
    records: IndexRecords | None = None
    rejected: list[str] = field(default_factory=list)
    search_parameters: list[tuple[int, SearchParameterChange]] = field(default_factory=list)


async def write_batch(conn: Connection, resources: list[Submitted], catalogs: Catalogs) -> BatchResult:
    """Write resources (each with a valid `resourceType` and `id`, no (type, id) twice) and their
    index rows in one transaction.

    New ids are inserted at version 1; existing ones get a new version, as a PUT would give them. Rows are
    indexed with the catalog of the change log's latest generation (see `catalog_for_write`).
    """
    keys = [(resource.values["resourceType"], resource.values["id"]) for resource in resources]
    last_updated = now_ms()
    async with conn.transaction():
        existing = {
            (row["res_type"], row["fhir_id"]): row
            for row in await conn.fetch(SELECT_EXISTING_FOR_UPDATE, [k[0] for k in keys], [k[1] for k in keys])
        }
        catalog = await catalog_for_write(conn, catalogs, any(key[0] == SEARCH_PARAMETER for key in keys))
        generation = catalog.generation
        new_count = len(keys) - len(existing)
        fresh_ids = iter([row[0] for row in await conn.fetch(ALLOCATE_RES_IDS, new_count)] if new_count else [])
        batch = _Batch()
        for resource, key in zip(resources, keys):
            _prepare(batch, resource, key, existing.get(key), fresh_ids, catalog, last_updated)
        await _write(conn, batch, last_updated, generation)
    return BatchResult(created=len(batch.inserts), updated=len(batch.updates), rejected=batch.rejected,
                       search_parameters=len(batch.search_parameters))


def prepare(resource: Submitted, fhir_id: str, version: int, last_updated: datetime, catalog: Catalog,
            method: str, res_id: int | None = None) -> Prepared:
    """Stamp and index a version to write with `catalog` (see `catalog_for_write`); FhirError when it cannot be
    indexed or used."""
    stamped, body = resource.stamped(fhir_id, version, last_updated)
    rows = catalog.index_rows(stamped)
    res_type = stamped["resourceType"]
    change = catalog.search_parameter_change(stamped) if res_type == SEARCH_PARAMETER else None
    return Prepared(res_type, fhir_id, version, body, rows, change, method, res_id)


async def write_prepared(conn: Connection, prepared: list[Prepared], last_updated: datetime, generation: int) -> None:
    """Write versions prepared with the catalog of `generation`, with one statement or COPY per table, in the
    caller's transaction. New resources have fresh ids, so none can exist already; the caller holds the locks
    of the rows it updates."""
    new_count = sum(1 for item in prepared if item.res_id is None)
    fresh_ids = iter([row[0] for row in await conn.fetch(ALLOCATE_RES_IDS, new_count)] if new_count else [])
    batch = _Batch()
    for item in prepared:
        res_id = next(fresh_ids) if item.res_id is None else item.res_id
        if item.res_id is None:
            batch.inserts.append((res_id, item.res_type, item.fhir_id, item.version, last_updated, False, item.body,
                                  generation, fingerprint(item.rows), EXTRACTOR))
        else:
            batch.updates.append((res_id, item.version, item.body, fingerprint(item.rows)))
        batch.versions.append((res_id, item.res_type, item.fhir_id, item.version, last_updated, False, item.method,
                               item.body))
        batch.records = index_records(res_id, item.res_type, item.rows, batch.records)
        if item.change is not None:
            batch.search_parameters.append((res_id, item.change))
    await _write(conn, batch, last_updated, generation)


def _prepare(batch: _Batch, resource: Submitted, key: tuple[str, str], current: asyncpg.Record | None,
             fresh_ids: Iterator[int], catalog: Catalog, last_updated: datetime) -> None:
    """Stamp and index one resource into the batch; one that cannot be indexed or used is rejected."""
    res_type, fhir_id = key
    version = 1 if current is None else current["version"] + 1
    stamped, body = resource.stamped(fhir_id, version, last_updated)
    try:
        rows = catalog.index_rows(stamped)
        change = catalog.search_parameter_change(stamped) if res_type == SEARCH_PARAMETER else None
    except FhirError as exc:
        batch.rejected.append(f"{res_type}/{fhir_id}: {exc.diagnostics}")
        return
    res_id = next(fresh_ids) if current is None else current["res_id"]
    if change is not None:
        batch.search_parameters.append((res_id, change))
    batch.records = index_records(res_id, res_type, rows, batch.records)
    if current is None:
        batch.inserts.append((res_id, res_type, fhir_id, version, last_updated, False, body, catalog.generation,
                              fingerprint(rows), EXTRACTOR))
    else:
        batch.updates.append((res_id, version, body, fingerprint(rows)))
    batch.versions.append((res_id, res_type, fhir_id, version, last_updated, False, "PUT", body))


async def _write(conn: Connection, batch: _Batch, last_updated: datetime, generation: int) -> None:
    if batch.inserts:
        await conn.copy_records_to_table("resource", records=batch.inserts, columns=RESOURCE_COPY_COLUMNS)
    if batch.updates:
        # In res_id order: the trigger of sql/0012 locks each one's index state as it goes, and a reindex batch
        # locks those in res_id order too.
        res_ids, numbers, bodies, hashes = zip(*sorted(batch.updates))
        await conn.execute(UPDATE_EXISTING, list(res_ids), list(numbers), list(bodies), list(hashes), last_updated,
                           generation, EXTRACTOR)
    if batch.versions:
        await conn.copy_records_to_table("resource_version", records=batch.versions, columns=VERSION_COPY_COLUMNS)
    # Only updated resources can have old index rows; new ones start empty.
    await replace_indexes(conn, [row[0] for row in batch.updates], batch.records or {})
    for res_id, change in batch.search_parameters:
        await record_change(conn, res_id, change)


async def analyze_resources(conn: Connection) -> None:
    """Refresh the planner statistics of the resource and index tables (names from the allow-list)."""
    await conn.execute(f"ANALYZE {', '.join(ANALYZE_TABLES)}")
