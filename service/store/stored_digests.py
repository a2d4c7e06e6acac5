"""The digests of a batch's stored index rows, spelled by PostgreSQL: what a forced or cleared reindex compares
with a fresh extraction, at a fifth of the Python work of decoding the rows.

A row's digest (`rows.row_digest`) is xxh3 of its JSON array as orjson writes it: `[code, values...]`.
PostgreSQL writes that same text for each stored row, and the rows of all tables come back in one value,
a line per resource: `res_id`, a tab, then its rows' JSON separated by RS (0x1E; JSON text holds no raw
control character). Python only hashes the bytes. A spelling that differed would only make a resource look
changed, and its rows be rewritten; `test_index_fingerprints` checks the spellings against the rows as
asyncpg decodes them, hostile values included. A table with a column PostgreSQL cannot spell as orjson
does (double precision: `1` against `1.0`) is read as rows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import orjson
from xxhash import xxh3_64_intdigest

from service.db import Connection
from service.search.rows import row_digest
from service.store.indexes import SELECT_BY_RESOURCES, TABLE_COLUMNS, code_name

Spelling = Literal["text", "numeric", "instant"]
# Each value column's type, as its JSON spelling needs it; None: no spelling of PostgreSQL's matches orjson's.
_COLUMN_SPELLING: dict[str, dict[str, Spelling | None]] = {
    "idx_string": {"normalized": "text", "exact": "text"},
    "idx_token": {"system": "text", "value": "text", "text": "text"},
    "idx_date": {"low": "instant", "high": "instant"},
    "idx_number": {"value": "numeric"},
    "idx_quantity": {"value": "numeric", "system": "text", "unit_code": "text", "unit": "text"},
    "idx_uri": {"uri": "text"},
    "idx_reference": {"target_type": "text", "target_id": "text", "target_url": "text"},
    "idx_position": {"latitude": None, "longitude": None},
    "idx_composite": {"parts": "text"},
    "idx_missing": {},
}
assert {table: tuple(spellings) for table, spellings in _COLUMN_SPELLING.items()} == {
    table: columns[2:] for table, columns in TABLE_COLUMNS.items()}, "a spelling for every index column"

# orjson's spelling of an aware UTC datetime (microseconds only when there are any); asyncpg gives the infinities
# as the largest and smallest datetimes.
_INSTANT = ("CASE {c} WHEN 'infinity' THEN '\"9999-12-31T23:59:59.999999+00:00\"' "
            "WHEN '-infinity' THEN '\"0001-01-01T00:00:00+00:00\"' "
            "ELSE '\"' || to_char({c} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS') "
            "|| CASE WHEN date_trunc('second', {c}) = {c} THEN '' ELSE to_char({c} AT TIME ZONE 'UTC', '.US') END "
            "|| '+00:00\"' END")
_SPELLINGS: dict[Spelling, str] = {
    "text": "to_json({c})::text",  # escapes as orjson does: \" \\ \b \f \n \r \t, other controls as \u00XX
    "numeric": "to_json({c}::text)::text",  # a string of the positional form, as rows._by_value spells a Decimal
    "instant": _INSTANT,
}


def _row_json(table: str) -> str:
    fields = "".join(f" || ',' || coalesce({_SPELLINGS[spelling].format(c=f't.{column}')}, 'null')"
                     for column, spelling in _COLUMN_SPELLING[table].items() if spelling is not None)
    # $2 and $3: the type's sp_hashes and their codes as JSON strings; another hash is named `?HASH`.
    return (f"SELECT t.res_id, '[' || coalesce(c.code, to_json('?' || t.sp_hash)::text){fields} || ']' AS row "
            f"FROM {table} t LEFT JOIN unnest($2::bigint[], $3::text[]) AS c(sp_hash, code) ON c.sp_hash = t.sp_hash "
            "WHERE t.res_id = ANY($1::bigint[])")


_SPELLED_TABLES = tuple(table for table, spellings in _COLUMN_SPELLING.items() if None not in spellings.values())
_RECORD_TABLES = tuple(table for table in TABLE_COLUMNS if table not in _SPELLED_TABLES)
SELECT_ROW_JSON = (
    "SELECT convert_to(string_agg(res_id || E'\\t' || rows, E'\\n'), 'UTF8') FROM ("
    "SELECT res_id, string_agg(row, E'\\x1e') AS rows FROM ("
    + " UNION ALL ".join(map(_row_json, _SPELLED_TABLES)) + ") AS spelled GROUP BY res_id) AS by_resource")


async def read_stored_digests(conn: Connection, res_ids: Sequence[int],
                              codes: dict[int, str]) -> dict[int, tuple[int, bool]]:
    """Per resource, the digest sum (`rows.digest_of`, not yet masked) of all its stored rows, as
    `indexes.read_stored_rows` gives them, and whether it has any; `codes` maps sp_hash to code."""
    sums = dict.fromkeys(res_ids, 0)
    stored: set[int] = set()
    spelled = await conn.fetchval(SELECT_ROW_JSON, list(res_ids), list(codes),
                                  [orjson.dumps(code).decode() for code in codes.values()])
    for line in spelled.split(b"\n") if spelled else ():
        spelled_id, _, rows = line.partition(b"\t")
        res_id = int(spelled_id)
        sums[res_id] += sum(map(xxh3_64_intdigest, rows.split(b"\x1e")))
        stored.add(res_id)
    for table in _RECORD_TABLES:
        for row in await conn.fetch(SELECT_BY_RESOURCES[table], list(res_ids)):
            sums[row[0]] += row_digest((code_name(codes, row[1]), *row[2:]))
            stored.add(row[0])
    return {res_id: (total, res_id in stored) for res_id, total in sums.items()}
