"""Bulk writes through COPY: many resources per transaction, client ids kept (update semantics)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

from service.fhir.errors import FhirError
from service.fhir.instant import now_ms
from service.fhir.resource import stamp
from service.search.catalog import Catalogs
from service.store.indexes import TABLE_COLUMNS, IndexRecords, index_records, replace_indexes
from service.store.resources import SEARCH_PARAMETER
from service.store.search_parameters import record_change

SELECT_EXISTING_FOR_UPDATE = """
SELECT r.res_id, r.res_type, r.fhir_id, r.version
FROM resource r JOIN unnest($1::text[], $2::text[]) AS k (res_type, fhir_id)
  ON r.res_type = k.res_type AND r.fhir_id = k.fhir_id
FOR UPDATE OF r"""
ALLOCATE_RES_IDS = "SELECT nextval(pg_get_serial_sequence('resource', 'res_id')) FROM generate_series(1, $1)"
UPDATE_EXISTING = """
UPDATE resource r SET version = u.version, last_updated = $4, deleted = false, body = u.body, index_gen = $5
FROM unnest($1::bigint[], $2::integer[], $3::bytea[]) AS u (res_id, version, body)
WHERE r.res_id = u.res_id"""
RESOURCE_COPY_COLUMNS = ("res_id", "res_type", "fhir_id", "version", "last_updated", "deleted", "body", "index_gen")
ANALYZE_TABLES = ("resource", *TABLE_COLUMNS)
VERSION_COPY_COLUMNS = ("res_id", "res_type", "fhir_id", "version", "last_updated", "deleted", "method", "body")


@dataclass(frozen=True, slots=True)
class BatchResult:
    created: int
    updated: int
    rejected: list[str]  # `Type/id: reason` of resources that could not be indexed (not written)
    search_parameters: int  # SearchParameters written: the catalog needs a refresh


async def write_batch(conn: asyncpg.Connection, resources: list[dict[str, Any]], catalogs: Catalogs) -> BatchResult:
    """Write resources (each with a valid `resourceType` and `id`, no (type, id) twice) and their
    index rows in one transaction.

    New ids are inserted at version 1; existing ones get a new version, as a PUT would give them.
    """
    keys = [(resource["resourceType"], resource["id"]) for resource in resources]
    last_updated, generation = now_ms(), catalogs.current.generation
    async with conn.transaction():
        existing = {
            (row["res_type"], row["fhir_id"]): row
            for row in await conn.fetch(SELECT_EXISTING_FOR_UPDATE, [k[0] for k in keys], [k[1] for k in keys])
        }
        new_count = len(keys) - len(existing)
        fresh_ids = iter([row[0] for row in await conn.fetch(ALLOCATE_RES_IDS, new_count)] if new_count else [])
        inserts, updates, versions, rejected, search_parameters = [], [], [], [], []
        records: IndexRecords | None = None
        for resource, (res_type, fhir_id) in zip(resources, keys):
            current = existing.get((res_type, fhir_id))
            version = 1 if current is None else current["version"] + 1
            stamped = stamp(resource, fhir_id, version, last_updated)
            try:
                rows = catalogs.index_rows(stamped)
                change = catalogs.search_parameter_change(stamped) if res_type == SEARCH_PARAMETER else None
            except FhirError as exc:
                rejected.append(f"{res_type}/{fhir_id}: {exc.diagnostics}")
                continue
            res_id = next(fresh_ids) if current is None else current["res_id"]
            if change is not None:
                search_parameters.append((res_id, change))
            records = index_records(res_id, res_type, rows, records)
            body = orjson.dumps(stamped)
            if current is None:
                inserts.append((res_id, res_type, fhir_id, version, last_updated, False, body, generation))
            else:
                updates.append((res_id, version, body))
            versions.append((res_id, res_type, fhir_id, version, last_updated, False, "PUT", body))
        if inserts:
            await conn.copy_records_to_table("resource", records=inserts, columns=RESOURCE_COPY_COLUMNS)
        if updates:
            res_ids, numbers, bodies = zip(*updates)
            await conn.execute(UPDATE_EXISTING, list(res_ids), list(numbers), list(bodies), last_updated, generation)
        await conn.copy_records_to_table("resource_version", records=versions, columns=VERSION_COPY_COLUMNS)
        # Only updated resources can have old index rows; new ones start empty.
        await replace_indexes(conn, [row[0] for row in updates], records or {})
        for res_id, change in search_parameters:
            await record_change(conn, res_id, change)
    return BatchResult(created=len(inserts), updated=len(updates), rejected=rejected,
                       search_parameters=len(search_parameters))


async def analyze_resources(conn: asyncpg.Connection) -> None:
    """Refresh the planner statistics of the resource and index tables (names from the allow-list)."""
    await conn.execute(f"ANALYZE {', '.join(ANALYZE_TABLES)}")
