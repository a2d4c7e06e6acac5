"""Index rows to and from the idx_* tables: COPY records, replacement of a resource's rows."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from service.db import Connection
from service.search.param_hash import sp_hash
from service.search.rows import (
    CompositeRow,
    DateRow,
    IndexRows,
    NumberRow,
    PositionRow,
    QuantityRow,
    ReferenceRow,
    Row,
    StringRow,
    TokenRow,
    UriRow,
)

# The allow-list of index tables and their COPY columns, in the order of the IndexRows fields
# (each row's fields after `code` map onto the columns after `sp_hash`). The columns are each table's own, in
# its order: a resource's rows are also written as arrays of the table's row type (`WRITE_ROWS`).
INDEX_TABLES: dict[str, tuple[str, ...]] = {
    "idx_string": ("res_id", "sp_hash", "normalized", "exact"),
    "idx_token": ("res_id", "sp_hash", "system", "value", "text"),
    "idx_date": ("res_id", "sp_hash", "low", "high"),
    "idx_number": ("res_id", "sp_hash", "value"),
    "idx_quantity": ("res_id", "sp_hash", "value", "system", "unit_code", "unit"),
    "idx_uri": ("res_id", "sp_hash", "uri"),
    "idx_reference": ("res_id", "sp_hash", "target_type", "target_id", "target_url"),
    "idx_position": ("res_id", "sp_hash", "latitude", "longitude"),
    "idx_composite": ("res_id", "sp_hash", "parts"),
}
_FIELD_TABLES = tuple(zip(IndexRows._fields, INDEX_TABLES))  # the fields before `missing`, one per table
MISSING_COLUMNS = ("res_id", "sp_hash")
TABLE_COLUMNS = {**INDEX_TABLES, "idx_missing": MISSING_COLUMNS}
# One statement (one round trip) deletes a batch's rows from every table: all of them, or those of some codes.
DELETE_BY_RESOURCES = "WITH " + ", ".join(
    f"d_{table} AS (DELETE FROM {table} WHERE res_id = ANY($1::bigint[]))" for table in TABLE_COLUMNS) + " SELECT 1"
# `IS TRUE` keeps the code test out of the index conditions: for a code the statistics think rare (one a
# running job is adding rows for), the planner would otherwise walk an (sp_hash, value) index over every
# row of the code, in each batch, instead of the batch's resources through the res_id index.
DELETE_CODES_BY_RESOURCES = "WITH " + ", ".join(
    f"d_{table} AS (DELETE FROM {table} WHERE res_id = ANY($1::bigint[]) AND (sp_hash = ANY($2::bigint[])) IS TRUE)"
    for table in TABLE_COLUMNS) + " SELECT 1"
SELECT_BY_RESOURCES = {
    table: f"SELECT {', '.join(columns)} FROM {table} WHERE res_id = ANY($1::bigint[])"
    for table, columns in TABLE_COLUMNS.items()
}

# Some codes' rows of a batch's resources (`IS TRUE` as in DELETE_CODES_BY_RESOURCES), few as a rule: every table
# in one round trip, per table an array of (columns...) or NULL.
SELECT_CODES_BY_RESOURCES = "SELECT " + ", ".join(
    f"(SELECT array_agg(({', '.join(columns)})) FROM {table} "
    f"WHERE res_id = ANY($1::bigint[]) AND (sp_hash = ANY($2::bigint[])) IS TRUE) AS {table}"
    for table, columns in TABLE_COLUMNS.items())

# A batch's stored rows with their ctids, per table, and their deletion by ctid (`rewrite_indexes`).
SELECT_WITH_CTID = {
    table: f"SELECT ctid, {', '.join(columns)} FROM {table} WHERE res_id = ANY($1::bigint[])"
    for table, columns in TABLE_COLUMNS.items()
}
DELETE_BY_CTIDS = {table: f"DELETE FROM {table} WHERE ctid = ANY($1::tid[])" for table in TABLE_COLUMNS}
# One resource's stored rows, every table in one round trip: per table an array of (ctid, columns...) or NULL.
SELECT_ALL_BY_RESOURCE = "SELECT " + ", ".join(
    f"(SELECT array_agg((ctid, {', '.join(columns)})) FROM {table} WHERE res_id = $1) AS {table}"
    for table, columns in TABLE_COLUMNS.items())


def _write_rows_statement() -> str:
    """Per table, in TABLE_COLUMNS order: delete the rows whose ctids are one tid[] parameter, and insert those of
    one array parameter of the table's row type (COPY records: TABLE_COLUMNS are the tables' columns in order).
    Every part sees the snapshot of the statement's start, so a delete never meets a row the statement inserts."""
    return "WITH " + ", ".join(
        f"d_{table} AS (DELETE FROM {table} WHERE ctid = ANY(${2 * number + 1}::tid[])), "
        f"i_{table} AS (INSERT INTO {table} SELECT * FROM unnest(${2 * number + 2}::{table}[]))"
        for number, table in enumerate(TABLE_COLUMNS)) + " SELECT 1"


WRITE_ROWS = _write_rows_statement()
IndexRecords = dict[str, list[tuple[object, ...]]]  # table -> COPY records (res_id, sp_hash, columns...)
COPY_SLICE = 2000


@dataclass(frozen=True, slots=True)
class IndexChanges:
    added: int
    removed: int
    kept: int

    @property
    def changed(self) -> bool:
        return bool(self.added or self.removed)


def index_records(res_id: int, res_type: str, rows: IndexRows, into: IndexRecords | None = None) -> IndexRecords:
    """COPY records of one resource's rows, appended per table (to `into` when given)."""
    records: IndexRecords = into if into is not None else {table: [] for table in (*INDEX_TABLES, "idx_missing")}
    for field, table in _FIELD_TABLES:
        target = records[table]
        for row in getattr(rows, field):
            target.append((res_id, sp_hash(res_type, row[0]), *row[1:]))
    records["idx_missing"].extend((res_id, sp_hash(res_type, code)) for code in rows.missing)
    return records


async def replace_indexes(conn: Connection, res_ids: Sequence[int], records: IndexRecords,
                          sp_hashes: Sequence[int] | None = None) -> int:
    """Delete the resources' index rows (only those of `sp_hashes` when given) and COPY the new ones; call
    inside a transaction. Returns rows written."""
    if res_ids:
        if sp_hashes is None:
            await conn.execute(DELETE_BY_RESOURCES, list(res_ids))
        else:
            await conn.execute(DELETE_CODES_BY_RESOURCES, list(res_ids), list(sp_hashes))
    return await insert_indexes(conn, records)


async def insert_indexes(conn: Connection, records: IndexRecords) -> int:
    """COPY index rows of resources that have none yet (new ones). Returns rows written."""
    written = 0
    for table, table_records in records.items():
        # In slices: encoding a COPY holds the event loop, and a reindex batch can have tens of thousands of rows.
        for start in range(0, len(table_records), COPY_SLICE):
            piece = table_records[start:start + COPY_SLICE]
            await conn.copy_records_to_table(table, records=piece, columns=TABLE_COLUMNS[table])
            written += len(piece)
    return written


async def update_indexes(conn: Connection, res_id: int, records: IndexRecords) -> IndexChanges:
    """Bring one resource's index rows to `records`, touching only the rows that differ, in two round trips
    (one to read what is stored, one to write the difference) whatever the number of tables.

    Call inside a transaction that holds the resource row's lock: rows are deleted by ctid.
    """
    stored = await conn.fetchrow(SELECT_ALL_BY_RESOURCE, res_id)
    assert stored is not None, "a SELECT without FROM has a row"
    additions, stale, kept = row_changes(records, {table: stored[table] or () for table in TABLE_COLUMNS})
    await write_rows(conn, additions, stale)
    return IndexChanges(sum(map(len, additions.values())), sum(map(len, stale.values())), kept)


async def rewrite_indexes(conn: Connection, res_ids: Sequence[int], records: IndexRecords) -> int:
    """Bring a batch's resources' index rows to `records`: delete (by ctid) and COPY only the rows that differ,
    so a repair or an extractor upgrade writes what changed, not every row; `res_ids` are the resources that may
    have rows stored (the records of others are COPYed as they are). Returns rows written.

    Call inside a transaction that holds the lock of the resources' index state: rows are deleted by ctid."""
    if not res_ids:
        return await insert_indexes(conn, records)
    additions: IndexRecords = {}
    for table, statement in SELECT_WITH_CTID.items():  # a table at a time: the loop runs other tasks between them
        stored = await conn.fetch(statement, list(res_ids))
        table_additions, stale, _ = row_changes({table: records.get(table, [])}, {table: stored}, (table,))
        additions |= table_additions
        if stale[table]:
            await conn.execute(DELETE_BY_CTIDS[table], stale[table])
    return await insert_indexes(conn, additions)


def row_changes(records: IndexRecords, stored: Mapping[str, Iterable[Iterable[Any]]],
                tables: Iterable[str] = TABLE_COLUMNS) -> tuple[IndexRecords, dict[str, list[object]], int]:
    """What brings the `stored` rows (per table: ctid, then the COPY columns) of `tables` to `records`: the records
    to add, the ctids to delete per table, and how many stored rows are kept."""
    stale: dict[str, list[object]] = {}
    additions: IndexRecords = {}
    kept = 0
    for table in tables:
        wanted = Counter(records.get(table, ()))
        stale[table] = []
        for ctid, *values in stored.get(table, ()):
            key = tuple(values)
            if wanted[key] > 0:
                wanted[key] -= 1
                kept += 1
            else:
                stale[table].append(ctid)
        additions[table] = list(wanted.elements())
    return additions, stale, kept


async def write_rows(conn: Connection, records: IndexRecords, stale: dict[str, list[object]] | None = None) -> None:
    """Insert `records` and delete the `stale` rows (ctids, per table) in one statement: one round trip, where
    a COPY per table takes two each. For a resource's few dozen rows; COPY is the way for batches."""
    stale = stale or {}
    if not any(records.values()) and not any(stale.values()):
        return
    arguments = [rows for table in TABLE_COLUMNS for rows in (stale.get(table, []), records.get(table, []))]
    await conn.execute(WRITE_ROWS, *arguments)


# The row type of each index table, in the order of INDEX_TABLES (missing rows carry only the code).
_ROW_TYPES = dict(zip(INDEX_TABLES, (StringRow, TokenRow, DateRow, NumberRow, QuantityRow, UriRow, ReferenceRow,
                                     PositionRow, CompositeRow)))
_FIELDS = dict(zip(INDEX_TABLES, IndexRows._fields))


async def read_index_rows(conn: Connection, res_id: int, codes: dict[int, str]) -> IndexRows:
    """One resource's stored index rows as IndexRows; `codes` maps sp_hash to code (a row whose hash is
    not there, left by a parameter that no longer exists, shows under `?`)."""
    fields: dict[str, list[Row | CompositeRow]] = {field: [] for field in _FIELDS.values()}  # in IndexRows field order
    missing = set()
    stored = await conn.fetchrow(SELECT_ALL_BY_RESOURCE, res_id)
    assert stored is not None, "a SELECT without FROM has a row"
    for table in TABLE_COLUMNS:
        for _ctid, _res_id, hash_, *values in stored[table] or ():
            code = codes.get(hash_, "?")
            if table == "idx_missing":
                missing.add(code)
            else:
                fields[_FIELDS[table]].append(_ROW_TYPES[table](code, *values))
    return IndexRows._make((*map(tuple, fields.values()), frozenset(missing)))


async def read_stored_rows(conn: Connection, res_ids: Sequence[int], codes: dict[int, str],
                           only_these: bool = False) -> dict[int, list[tuple[Any, ...]]]:
    """The stored rows of each resource (of the `codes` only when `only_these`), each as `(code, columns after
    sp_hash...)` and a missing code as `(code,)`, the form `rows.digest_of` sums; `codes` maps sp_hash to code
    (a row of another hash shows under `?HASH`)."""
    by_resource: dict[int, list[tuple[Any, ...]]] = {res_id: [] for res_id in res_ids}
    if only_these:  # few rows: one round trip
        arrays = await conn.fetchrow(SELECT_CODES_BY_RESOURCES, list(res_ids), list(codes))
        assert arrays is not None, "a SELECT without FROM has a row"
        for table in TABLE_COLUMNS:
            _add_rows(by_resource, arrays[table] or (), codes)
        return by_resource
    # All rows: a statement per table, as plain rows decode faster than arrays of records; each table's rows are
    # taken in before the next is read, so the loop runs other tasks between tables.
    for statement in SELECT_BY_RESOURCES.values():
        _add_rows(by_resource, await conn.fetch(statement, list(res_ids)), codes)
    return by_resource


def _add_rows(by_resource: dict[int, list[tuple[Any, ...]]], rows: Iterable[Iterable[Any]],
              codes: dict[int, str]) -> None:
    for res_id, hash_, *values in rows:
        by_resource[res_id].append((code_name(codes, hash_), *values))


def code_name(codes: dict[int, str], hash_: int) -> str:
    """The parameter code of a stored row's sp_hash; `?HASH` for one that names no parameter of the type."""
    return codes.get(hash_) or f"?{hash_}"
