"""A batch's fresh extraction compared with the index rows actually stored, in the snapshot the batch was read
in, for the resources extracted whole: a forced job, a verification, resources indexed by an older extractor
(whose fingerprint says what that extractor wrote, which may not be what the tables hold) or without a
fingerprint. Those extracted for their stale codes only are compared in the write's transaction
(reindex_batch.py)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace

import asyncpg

from service.db import Connection
from service.jobs.reindex_batch import PreparedBatch, prepare_batch, settle, settle_all, settle_digest
from service.jobs.start import ReindexPlan
from service.search.catalog import Catalog
from service.search.param_hash import sp_hash
from service.search.registry import Registry
from service.search.rows import IndexRows, flat_rows
from service.store.indexes import read_stored_rows
from service.store.stored_digests import read_stored_digests

Rows = Counter[tuple[object, ...]]  # (code, values...) or (code,) for a missing code, as `flat_rows` gives them


@dataclass(frozen=True, slots=True)
class Difference:
    """How one resource's stored rows differ from a fresh extraction: per parameter code, how many rows
    are missing from the tables and how many are there but should not be (stray)."""

    fhir_id: str
    codes: dict[str, tuple[int, int]]


async def prepare_compared(conn: Connection, res_type: str, rows: list[asyncpg.Record], catalog: Catalog,
                           plan: ReindexPlan) -> PreparedBatch:
    """`prepare_batch`, then each extracted resource compared with its stored rows (of its stale codes, or all),
    read on `conn` in the snapshot `rows` were read in: those equal need no write; the others get the rows to
    write, and, in a verification, are the batch's differences."""
    batch = await prepare_batch(res_type, rows, catalog, plan)
    whole = [item for item in batch.extracted if item.pending is not None and item.exact]
    if not whole:
        return batch
    res_ids, codes = [item.res_id for item in whole], parameter_codes(res_type, catalog.registry)
    if not plan.verify:  # only a verification reports what differs: the others need the stored rows' digests alone
        digests = await read_stored_digests(conn, res_ids, codes)
        settled = await settle_all(whole, lambda item: settle_digest(res_type, item, *digests[item.res_id]))
        return replace(batch, extracted=[settled.get(item.res_id, item) for item in batch.extracted])
    stored = await read_stored_rows(conn, res_ids, codes)
    settled = await settle_all(whole, lambda item: settle(res_type, item, stored[item.res_id]))
    batch = replace(batch, extracted=[settled.get(item.res_id, item) for item in batch.extracted])
    fhir_ids = {row["res_id"]: row["fhir_id"] for row in rows}
    found = (difference(fhir_ids[item.res_id], Counter(flat_rows(item.pending or IndexRows())),
                        Counter(stored[item.res_id]))
             for item in whole if settled[item.res_id].differs)
    return replace(batch, differences=[item for item in found if item is not None])


def parameter_codes(res_type: str, registry: Registry) -> dict[int, str]:
    """sp_hash -> code of the type's parameters, to name the parameter of a stored row."""
    return {sp_hash(res_type, parameter.definition.code): parameter.definition.code
            for parameter in registry.parameters(res_type)}


def difference(fhir_id: str, fresh: Rows, stored: Rows) -> Difference | None:
    """None when the stored rows are the fresh ones; a row whose sp_hash names no parameter of the type
    (left by a parameter that no longer exists, or written outside the service) counts under `?HASH`."""
    if fresh == stored:
        return None
    by_code: dict[str, tuple[int, int]] = {}
    for rows, column in ((fresh - stored, 0), (stored - fresh, 1)):
        for row, count in rows.items():
            code = row[0]
            assert isinstance(code, str), "the first field of a row is its code"
            counts = list(by_code.get(code, (0, 0)))
            counts[column] += count
            by_code[code] = (counts[0], counts[1])
    return Difference(fhir_id, by_code)
