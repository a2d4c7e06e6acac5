"""A batch's fresh extraction compared with the index rows actually stored: all of them for a forced job, a
verification, and resources indexed by an older extractor (whose fingerprint says what that extractor wrote,
which may not be what the tables hold); only the rows of the stale codes for the others, which is all that
was extracted of them."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, replace
from typing import Any

import asyncpg

from service.db import Connection
from service.jobs.reindex_batch import Extracted, PreparedBatch, prepare_batch
from service.jobs.start import ReindexPlan
from service.search.catalog import Catalog
from service.search.param_hash import sp_hash
from service.search.registry import Registry
from service.search.rows import IndexRows, as_fingerprint, digest_of, digest_sum, flat_rows, moved
from service.store.indexes import index_records, read_stored_rows

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
    write, and those compared whole are the batch's differences."""
    batch = await prepare_batch(res_type, rows, catalog, plan)
    pending = [item for item in batch.extracted if item.pending is not None]
    if not pending:
        return batch
    stored = await _read_stored(conn, res_type, pending, catalog.registry)
    settled = {item.res_id: _settled(res_type, item, stored[item.res_id]) for item in pending}
    fhir_ids = {row["res_id"]: row["fhir_id"] for row in rows}
    found = (difference(fhir_ids[item.res_id], Counter(flat_rows(item.pending or IndexRows())),
                        Counter(stored[item.res_id]))
             for item in pending if item.exact and settled[item.res_id].differs)
    return replace(batch, extracted=[settled.get(item.res_id, item) for item in batch.extracted],
                   differences=[item for item in found if item is not None])


async def _read_stored(conn: Connection, res_type: str, pending: list[Extracted],
                       registry: Registry) -> dict[int, list[tuple[Any, ...]]]:
    """The stored rows of the pending resources: all of those compared whole, their stale codes' of the others."""
    whole = [item.res_id for item in pending if item.codes is None]
    stored = await read_stored_rows(conn, whole, parameter_codes(res_type, registry)) if whole else {}
    if stale := frozenset().union(*(item.codes or () for item in pending)):
        stored |= await read_stored_rows(conn, [item.res_id for item in pending if item.codes is not None],
                                         {sp_hash(res_type, code): code for code in stale}, only_these=True)
    return stored


def _settled(res_type: str, item: Extracted, stored: list[tuple[Any, ...]]) -> Extracted:
    """The item once its fresh rows were compared with the `stored` ones by digest (what fingerprints sum)."""
    assert item.pending is not None, "a pending item"
    if item.codes is not None:
        stored = [row for row in stored if row[0] in item.codes]
    before = digest_of(stored)
    if item.exact:  # every code was extracted: the fingerprint is that of the fresh rows
        differs, fingerprint = item.fingerprint != as_fingerprint(before), item.fingerprint
    else:
        assert item.read_hash is not None, "only fingerprinted rows are extracted in part"
        fresh = digest_sum(item.pending)
        differs, fingerprint = fresh != before, moved(item.read_hash, before, fresh)
    if not differs:
        return item._replace(pending=None)
    return item._replace(records=index_records(item.res_id, res_type, item.pending), fingerprint=fingerprint,
                         pending=None, replaces=bool(stored))


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
