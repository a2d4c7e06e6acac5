"""Fingerprints are sums of a digest per index row, so a reindex moves one by the digests of the rows it
replaces, read back from the tables: those must digest exactly as the extraction that wrote them."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import orjson
import pytest

from service.search.param_hash import sp_hash
from service.search.registry import Registry
from service.search.rows import as_fingerprint, digest_of, fingerprint
from service.store.indexes import TABLE_COLUMNS, read_stored_rows
from service.store.stored_digests import read_stored_digests
from tests.conftest import SEARCH_DATASETS
from tests.indexes import fingerprint_mismatches

SLICE = 2000
PER_TYPE = 400  # resources of each type: every row type of both data sets, at a sixth of the cost of all
SAMPLE = """
SELECT res_id, res_type, body FROM (
    SELECT res_id, res_type, body, row_number() OVER (PARTITION BY res_type ORDER BY res_id) AS n
    FROM resource WHERE NOT deleted) numbered
WHERE n <= $1 ORDER BY res_id"""


@pytest.mark.dataset(*SEARCH_DATASETS)
async def test_rows_read_back_digest_as_the_extraction_that_wrote_them(db):
    """Every row type (decimals with their scale, instants, positions, composites, :missing) of both data sets,
    read back as rows or as their digests alone."""
    registry = Registry.builtin()
    by_type = defaultdict(list)
    for row in await db.fetch(SAMPLE, PER_TYPE):
        by_type[row["res_type"]].append(row)
    compared = 0
    for res_type, rows in by_type.items():
        codes = {sp_hash(res_type, parameter.definition.code): parameter.definition.code
                 for parameter in registry.parameters(res_type)}
        for start in range(0, len(rows), SLICE):
            part = rows[start:start + SLICE]
            stored = await read_stored_rows(db, [row["res_id"] for row in part], codes)
            digests = await read_stored_digests(db, [row["res_id"] for row in part], codes)
            for row in part:
                fresh = fingerprint(registry.extract(orjson.loads(row["body"])))
                assert as_fingerprint(digest_of(stored[row["res_id"]])) == fresh
                # What a forced or cleared job reads instead of the rows: the same digest.
                assert (as_fingerprint(digests[row["res_id"]][0]), digests[row["res_id"]][1]) == (
                    fresh, bool(stored[row["res_id"]]))
                compared += 1
    assert compared == sum(map(len, by_type.values())) > 5_000
    assert {"Observation", "Location", "Organization"} <= by_type.keys()


@pytest.mark.dataset(*SEARCH_DATASETS)
async def test_the_loader_records_the_fingerprint_of_what_it_wrote(db):
    assert await fingerprint_mismatches(db, Registry.builtin()) == []


# Values whose spelling in a row's JSON is easy to get wrong: escapes, characters outside the BMP, decimals'
# scales, instants with and without microseconds, at the ends of the range and at infinity, NULLs, doubles.
HOSTILE_ROWS: list[tuple[str, tuple[object, ...]]] = [
    ("idx_string", ("quote \" backslash \\ slash /", "Tab\tNewline\nReturn\r")),
    ("idx_string", ("\x01\x08\x0c\x1e\x1f\x7f", "\u2028\u2029 é 😀 \ufeff")),
    ("idx_string", ("", "")),
    ("idx_token", (None, "a|b,c$d", None)),
    ("idx_token", ("http://x.org/cs?a=1&b=\"2\"", "\\", "escape \x1b")),
    ("idx_date", (datetime(2020, 1, 1, tzinfo=UTC), datetime(2020, 1, 1, 0, 0, 0, 1, tzinfo=UTC))),
    ("idx_date", (datetime(999, 12, 31, 23, 59, 59, 123000, tzinfo=UTC), datetime(9999, 12, 31, 23, 59, 59, 999999,
                                                                                  tzinfo=UTC))),
    ("idx_date", (datetime(1, 1, 1, tzinfo=UTC), datetime(2024, 2, 29, 12, 30, tzinfo=timezone(timedelta(hours=5))))),
    ("idx_date", ("-infinity", "infinity")),
    ("idx_number", (Decimal("1.50"),)),
    ("idx_number", (Decimal("0.000"),)),
    ("idx_number", (Decimal("-0.5"),)),
    ("idx_number", (Decimal("1E+5"),)),
    ("idx_number", (Decimal("1E-20"),)),
    ("idx_number", (Decimal("NaN"),)),
    ("idx_number", (Decimal("12345678901234567890.123456789"),)),
    ("idx_quantity", (Decimal("5.40"), "http://unitsofmeasure.org", "mg/dL", None)),
    ("idx_quantity", (Decimal("-1"), None, None, "µg \"micro\"")),
    ("idx_uri", ("urn:uuid:\"x\"\\y",)),
    ("idx_reference", ("Patient", "p-1", None)),
    ("idx_reference", (None, None, "http://other.org/fhir/Patient/1?x=\"y\"")),
    ("idx_position", (1.0, -0.0)),
    ("idx_position", (0.1, 1e-07)),
    ("idx_composite", ('[{"system":"s","value":"v\\"w"},{"value":"1.50"}]',)),
    ("idx_missing", ()),
]


async def test_hostile_values_digest_as_their_rows_decoded(db):
    """What a forced or cleared job digests from PostgreSQL's spelling of each stored row equals the digest of
    that row as asyncpg decodes it, whatever the row holds; a row whose sp_hash names no parameter counts under
    `?HASH` both ways."""
    codes = {sp_hash("Observation", "code"): "code", sp_hash("Observation", "date"): "date"}
    res_ids = []
    for res_id, (table, values) in enumerate(HOSTILE_ROWS, start=1):
        for hash_ in (*codes, -12345):
            columns = TABLE_COLUMNS[table][: 2 + len(values)]
            # The infinities are spelled in SQL (asyncpg writes no datetime as one).
            placeholders = ", ".join(f"${n}::text::timestamptz" if isinstance(value, str) and table == "idx_date"
                                     else f"${n}" for n, value in enumerate((res_id, hash_, *values), start=1))
            await db.execute(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({placeholders})",
                             res_id, hash_, *values)
        res_ids.append(res_id)
    res_ids.append(len(HOSTILE_ROWS) + 1)  # no rows at all
    rows = await read_stored_rows(db, res_ids, codes)
    digests = await read_stored_digests(db, res_ids, codes)
    differing = [(res_id, rows[res_id]) for res_id in res_ids
                 if (as_fingerprint(digests[res_id][0]), digests[res_id][1])
                 != (as_fingerprint(digest_of(rows[res_id])), bool(rows[res_id]))]
    assert differing == []
    assert digests[len(HOSTILE_ROWS) + 1] == (0, False)
    assert sum(len(rows[res_id]) for res_id in res_ids) == 3 * len(HOSTILE_ROWS)
