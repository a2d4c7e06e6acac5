"""Oracle for index tables: what they hold, and what a clean extraction of the current resources gives."""

from __future__ import annotations

from collections import Counter

import asyncpg
import orjson

from service.search.registry import Registry
from service.search.rows import fingerprint
from service.store.indexes import TABLE_COLUMNS, index_records


async def stored_index_rows(conn: asyncpg.Connection) -> dict[str, Counter[tuple]]:
    stored = {}
    for table, columns in TABLE_COLUMNS.items():
        rows = await conn.fetch(f"SELECT {', '.join(columns)} FROM {table}")  # names from the allow-list
        stored[table] = Counter(tuple(row) for row in rows)
    return stored


async def expected_index_rows(conn: asyncpg.Connection, registry: Registry) -> dict[str, Counter[tuple]]:
    records = {table: [] for table in TABLE_COLUMNS}
    for row in await conn.fetch("SELECT res_id, res_type, body FROM resource WHERE NOT deleted"):
        index_records(row["res_id"], row["res_type"], registry.extract(orjson.loads(row["body"])), records)
    return {table: Counter(table_records) for table, table_records in records.items()}


async def fingerprint_mismatches(conn: asyncpg.Connection, registry: Registry) -> list[str]:
    """The live resources whose recorded fingerprint is not that of a clean extraction of their body."""
    rows = await conn.fetch("SELECT r.res_type, r.fhir_id, r.body, s.index_hash FROM resource r "
                            "JOIN resource_index_state s ON s.res_id = r.res_id WHERE NOT r.deleted")
    return [f"{row['res_type']}/{row['fhir_id']}" for row in rows
            if fingerprint(registry.extract(orjson.loads(row["body"]))) != row["index_hash"]]
