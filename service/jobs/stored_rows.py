"""A batch's fresh extraction compared with the index rows actually stored: all of them for a forced job, a
verification, and resources indexed by an older extractor (whose fingerprint says what that extractor wrote,
which may not be what the tables hold); only the rows of the stale codes for the others, which is all that
was extracted of them."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, replace

import asyncpg

from service.db import Connection
from service.jobs.reindex_batch import Extracted, PreparedBatch, prepare_batch
from service.jobs.start import ReindexPlan
from service.search.catalog import Catalog
from service.search.param_hash import sp_hash
from service.search.registry import Registry
from service.search.rows import IndexRows, digest_sum, moved, only_codes
from service.store.indexes import read_rows_of_codes, stored_form, stored_records

Rows = Counter[tuple[object, ...]]  # (table, sp_hash, values...) as `stored_form` gives them


@dataclass(frozen=True, slots=True)
class Difference:
    """How one resource's stored rows differ from a fresh extraction: per parameter code, how many rows
    are missing from the tables and how many are there but should not be (stray)."""

    fhir_id: str
    codes: dict[str, tuple[int, int]]


async def prepare_compared(conn: Connection, res_type: str, rows: list[asyncpg.Record], catalog: Catalog,
                           plan: ReindexPlan) -> PreparedBatch:
    """`prepare_batch`, then the resources it compares exactly are compared with their rows read on `conn`,
    in the snapshot `rows` were read in: those equal need no write, the others are the batch's differences."""
    batch = await prepare_batch(res_type, rows, catalog, plan)
    if any(item.pending is not None for item in batch.extracted):
        batch = replace(batch, extracted=await _settle_pending(conn, res_type, batch.extracted))
    exact = [item.res_id for item in batch.extracted if item.exact]
    if not exact:
        return batch
    stored = await stored_records(conn, exact)
    codes = parameter_codes(res_type, catalog.registry)
    fhir_ids = {row["res_id"]: row["fhir_id"] for row in rows}
    extracted, differences = [], []
    for item in batch.extracted:
        if item.exact and item.records is not None:
            found = difference(fhir_ids[item.res_id], stored_form(item.records), stored[item.res_id], codes)
            if found is None:
                item = item._replace(records=None)
            else:
                differences.append(found)
        extracted.append(item)
    return replace(batch, extracted=extracted, differences=differences)


async def _settle_pending(conn: Connection, res_type: str, extracted: list[Extracted]) -> list[Extracted]:
    """Compare the fresh rows of the resources' stale codes with the stored rows of those codes: equal, there is
    nothing to write; else their fingerprint moves by the difference, and the stored rows are deleted (if any)."""
    pending = [item for item in extracted if item.pending is not None]
    codes = frozenset().union(*(item.codes or () for item in pending))
    stored = await read_rows_of_codes(conn, [item.res_id for item in pending],
                                      {sp_hash(res_type, code): code for code in codes})
    settled = []
    for item in extracted:
        if item.pending is not None:
            item = _settled(item, only_codes(stored[item.res_id], item.codes or codes))
        settled.append(item)
    return settled


def _settled(item: Extracted, stored: IndexRows) -> Extracted:
    assert item.pending is not None and item.read_hash is not None, "only fingerprinted rows are extracted in part"
    fresh, before = digest_sum(item.pending), digest_sum(stored)
    if fresh == before:
        return item._replace(records=None, pending=None)
    return item._replace(fingerprint=moved(item.read_hash, before, fresh), pending=None,
                         replaces=bool(stored.missing) or any(stored.tables()))


def parameter_codes(res_type: str, registry: Registry) -> dict[int, str]:
    """sp_hash -> code of the type's parameters, to name the parameter of a stored row."""
    return {sp_hash(res_type, parameter.definition.code): parameter.definition.code
            for parameter in registry.parameters(res_type)}


def difference(fhir_id: str, fresh: Rows, stored: Rows, codes: Mapping[int, str]) -> Difference | None:
    """None when the stored rows are the fresh ones; a row whose sp_hash names no parameter of the type
    (left by a parameter that no longer exists, or written outside the service) counts under `?HASH`."""
    if fresh == stored:
        return None
    by_code: dict[str, tuple[int, int]] = {}
    for rows, column in ((fresh - stored, 0), (stored - fresh, 1)):
        for row, count in rows.items():
            hashed = row[1]
            assert isinstance(hashed, int), "the second field of a stored form is the sp_hash"
            code = codes.get(hashed, f"?{hashed}")
            counts = list(by_code.get(code, (0, 0)))
            counts[column] += count
            by_code[code] = (counts[0], counts[1])
    return Difference(fhir_id, by_code)
