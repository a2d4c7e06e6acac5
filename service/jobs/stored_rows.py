"""A batch's fresh extraction compared with the index rows actually stored, not with their fingerprint: for
a forced job, a verification, and resources indexed by an older extractor (whose fingerprint says what that
extractor wrote, which may not be what the tables hold)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, replace

import asyncpg

from service.db import Connection
from service.jobs.reindex_batch import PreparedBatch, prepare_batch
from service.jobs.start import ReindexPlan
from service.search.catalog import Catalog
from service.search.param_hash import sp_hash
from service.search.registry import Registry
from service.store.indexes import stored_form, stored_records

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
