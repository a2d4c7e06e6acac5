"""Fingerprints are sums of a digest per index row, so a reindex moves one by the digests of the rows it
replaces, read back from the tables: those must digest exactly as the extraction that wrote them."""

from __future__ import annotations

from collections import defaultdict

import orjson
import pytest

from service.search.param_hash import sp_hash
from service.search.registry import Registry
from service.search.rows import as_fingerprint, digest_of, fingerprint
from service.store.indexes import read_stored_digests, read_stored_rows
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
