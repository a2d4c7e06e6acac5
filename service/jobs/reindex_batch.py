"""One batch of a reindex chunk: extract (pure CPU work, done before any lock is taken), then write in
the caller's transaction: index rows of the resources whose rows differ, compact bodies, and counts."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import asyncpg
import orjson

from service.db import Connection
from service.jobs.pacing import LoopSlices
from service.jobs.start import ReindexPlan
from service.jobs.storage_step import BodyRewrite, compact_body, rewrite_current, rewrite_history
from service.search.catalog import Catalog
from service.search.extractor import AGE_DIVISOR, is_newer, is_stale
from service.search.extractor import current as current_extractor
from service.search.param_hash import sp_hash
from service.search.rows import IndexRows, as_fingerprint, digest_of, digest_sum, fingerprint, moved
from service.store.indexes import (
    TABLE_COLUMNS,
    IndexRecords,
    index_records,
    read_stored_rows,
    replace_indexes,
    rewrite_indexes,
)

if TYPE_CHECKING:  # jobs/stored_rows.py builds on this module
    from service.jobs.stored_rows import Difference

# One statement takes the locks of the resources' index state (sql/0012: a narrow row each, so marking a resource
# copies a few dozen bytes, not its body) and records the generation, extractor and fingerprint of the rows about
# to be written; it returns the resources whose rows are to be written. A resource is left alone when, since the
# read, it was updated ($5, optimisticLock: its own write indexed it) or deleted (its state row is gone), or its
# rows were rewritten without a new version (another job, an instance $reindex: index_hash moved), or indexed
# with definitions newer than this worker's catalog (index_gen above $4) or by a newer extractor than its own.
# Every writer changes the state row in the transaction of its write, so a waiting UPDATE re-checks the
# conditions on what that write left.
MARK_INDEXED = f"""
UPDATE resource_index_state s SET index_gen = $4, index_hash = u.index_hash, index_extractor = $7::bigint
FROM unnest($1::bigint[], $2::integer[], $3::bigint[], $6::bigint[]) AS u (res_id, version, index_hash, read_hash)
WHERE s.res_id = u.res_id AND (s.version = u.version OR NOT $5)
  AND s.index_gen <= $4 AND s.index_hash IS NOT DISTINCT FROM u.read_hash
  AND (s.index_extractor IS NULL OR s.index_extractor / {AGE_DIVISOR} <= $7::bigint / {AGE_DIVISOR})
RETURNING s.res_id"""
MAX_FAILURE_REASON = 300


@dataclass
class BatchOutcome:
    """What one batch did, for the checkpoint."""

    last_res_id: int
    changed: int = 0
    unchanged: int = 0
    failures: list[dict[str, str]] = field(default_factory=list)

    @property
    def processed(self) -> int:
        return self.changed + self.unchanged + len(self.failures)


class Extracted(NamedTuple):  # one per resource: cheaper to build than a frozen dataclass
    res_id: int
    version: int
    read_hash: int | None  # the fingerprint stored when the batch was read
    fingerprint: int  # of the fresh extraction
    records: IndexRecords | None  # the rows to write (of `codes`), when they differ from those stored
    codes: frozenset[str] | None  # the codes whose rows are compared and rewritten (None: every code)
    current: bool  # indexed at this generation by this extractor already: nothing to record unless the rows differ
    # Every code extracted (forced, verified, indexed by an older extractor, or without a fingerprint): the
    # differences are reported, and `fingerprint` is that of the fresh rows.
    exact: bool
    # The fresh rows (of `codes`) until `settle` has compared them with the stored rows (of `codes`), set
    # `records` when they differ, and, for some codes, moved `fingerprint` from the one read by the difference
    # (the other codes were not extracted). Rows extracted whole are compared in the batch's snapshot
    # (jobs/stored_rows.py), those of some codes in the write's transaction (`write_prepared`).
    pending: IndexRows | None = None
    replaces: bool = True  # rows of `codes` (or any) are stored: delete before the COPY

    @property
    def differs(self) -> bool:
        return self.records is not None


@dataclass(frozen=True, slots=True)
class PreparedBatch:
    """A batch read and extracted, ready for its write transaction."""

    rows: list[asyncpg.Record]
    started: float  # perf_counter when its extraction began: a batch's latency runs from there to its commit
    generation: int  # of the catalog the rows were extracted with
    extracted: list[Extracted]
    rewrites: list[BodyRewrite]
    failures: dict[int, str]  # res_id -> reason
    differences: list[Difference] = field(default_factory=list)  # of the rows stored, when compared

    def halves(self) -> tuple[PreparedBatch, PreparedBatch]:
        """The batch cut in two by its rows (of two rows at least), each with its own extractions."""
        middle = len(self.rows) // 2
        return self._part(self.rows[:middle]), self._part(self.rows[middle:])

    def _part(self, rows: list[asyncpg.Record]) -> PreparedBatch:
        ids = {row["res_id"] for row in rows}
        return PreparedBatch(rows, self.started, self.generation,
                             [item for item in self.extracted if item.res_id in ids],
                             [item for item in self.rewrites if item.res_id in ids],
                             {res_id: reason for res_id, reason in self.failures.items() if res_id in ids})


async def prepare_batch(res_type: str, rows: list[asyncpg.Record], catalog: Catalog,
                        plan: ReindexPlan) -> PreparedBatch:
    """Parse and extract what the batch's write needs (CPU work, yielding the loop now and then)."""
    batch = PreparedBatch(rows, time.perf_counter(), catalog.generation, [], [], {})
    slices = LoopSlices()
    codes_by_gen: dict[int, tuple[frozenset[str], frozenset[str]]] = {}
    for row in rows:
        await slices.pause()
        index_gen = row["index_gen"]
        codes = codes_by_gen.get(index_gen)
        if codes is None:
            codes = codes_by_gen[index_gen] = (catalog.stale_codes(res_type, index_gen),
                                               catalog.unstored_codes(res_type, index_gen))
        check = _what_to_check(row, codes[0], catalog, plan)
        if check is None and plan.optimize_storage == "NONE":
            continue
        try:
            if check is not None:
                item = _extract(row, res_type, catalog, *check)
                # Codes first in force after the resource was indexed have no rows stored: compared here, with none.
                if item.codes is not None and item.codes <= codes[1]:
                    item = settle(res_type, item, [])
                batch.extracted.append(item)
            if plan.optimize_storage != "NONE":
                body = compact_body(row["body"])
                if plan.force or body != row["body"]:
                    batch.rewrites.append(BodyRewrite(row["res_id"], row["version"], body, body != row["body"]))
        except ValueError as exc:  # not JSON, or not the shape of its type
            batch.failures[row["res_id"]] = str(exc)
    return batch


def _what_to_check(row: asyncpg.Record, stale: frozenset[str], catalog: Catalog,
                   plan: ReindexPlan) -> tuple[frozenset[str] | None, bool] | None:
    """The codes whose rows to extract and check (None: all) and whether against the rows stored rather than
    the fingerprint; None when the resource's rows are left alone.

    Only the rows of codes whose definitions changed since the resource was indexed (`stale`) can be stale;
    a resource with none costs only its read. Unknown rows (no fingerprint), rows of an older extractor, a
    forced job and a verification check all, except rows indexed with definitions newer than this worker's
    or by a newer extractor: their own write did the job."""
    stored, mine = row["index_extractor"], current_extractor()
    if not plan.reindex_search_parameters or row["index_gen"] > catalog.generation or (
            stored is not None and is_newer(stored, mine)):
        return None
    if plan.force or plan.verify or is_stale(stored, mine) or row["index_hash"] is None:
        return None, True
    return (stale, False) if stale else None


def _extract(row: asyncpg.Record, res_type: str, catalog: Catalog, codes: frozenset[str] | None,
             exact: bool) -> Extracted:
    resource = orjson.loads(row["body"])
    if resource.__class__ is not dict:
        raise ValueError(f"the stored body is not a JSON object but {type(resource).__name__}")
    if codes is not None:  # only these codes can be stale: the other codes' rows are not even extracted
        rows = catalog.registry.extract(resource, codes)
        return Extracted(row["res_id"], row["version"], row["index_hash"], row["index_hash"], None, codes, False,
                         False, rows)
    rows = catalog.registry.extract(resource)
    digest = fingerprint(rows)
    current = (row["index_gen"] == catalog.generation and row["index_extractor"] == current_extractor().number
               and digest == row["index_hash"])
    return Extracted(row["res_id"], row["version"], row["index_hash"], digest, None, None, current, exact, rows)


async def write_prepared(conn: Connection, res_type: str, batch: PreparedBatch,
                         plan: ReindexPlan) -> BatchOutcome:
    """Write a prepared batch inside the caller's transaction (which also holds the checkpoint); a
    verification writes nothing."""
    if plan.verify:
        return batch_outcome(res_type, batch.rows, set(), dict(batch.failures))
    extracted = await _settle_stale_codes(conn, res_type, batch.extracted)
    changed = await _write_indexes(conn, res_type, extracted, batch.generation, plan.optimistic_lock)
    changed |= await rewrite_current(conn, batch.rewrites)
    failures = dict(batch.failures)
    if plan.optimize_storage == "ALL_VERSIONS":
        current = {row["res_id"]: row["version"] for row in batch.rows if row["res_id"] not in failures}
        rewritten, unreadable = await rewrite_history(conn, current, plan.force)
        changed |= rewritten
        failures.update(unreadable)
    return batch_outcome(res_type, batch.rows, changed, failures)


async def _settle_stale_codes(conn: Connection, res_type: str, extracted: list[Extracted]) -> list[Extracted]:
    """The resources extracted for their stale codes, compared with the stored rows of those codes (unless they
    were compared with none already). Read here, off the batch's read path; the marking then checks that no
    writer changed the rows since the batch was read."""
    stale = [item for item in extracted if item.pending is not None]
    if not stale:
        return extracted
    codes = frozenset().union(*(item.codes or () for item in stale))
    stored = await read_stored_rows(conn, [item.res_id for item in stale],
                                    {sp_hash(res_type, code): code for code in codes}, only_these=True)
    settled = await settle_all(stale, lambda item: settle(res_type, item, stored[item.res_id]))
    return [settled.get(item.res_id, item) for item in extracted]


async def settle_all(items: list[Extracted], settle_one: Callable[[Extracted], Extracted]) -> dict[int, Extracted]:
    """`settle_one` of each item (CPU work, yielding the loop now and then); by res_id."""
    slices = LoopSlices()
    settled = {}
    for item in items:
        await slices.pause()
        settled[item.res_id] = settle_one(item)
    return settled


def settle(res_type: str, item: Extracted, stored: list[tuple[Any, ...]]) -> Extracted:
    """The item once its fresh rows were compared with the `stored` ones by digest (what fingerprints sum)."""
    if item.codes is not None:
        stored = [row for row in stored if row[0] in item.codes]
    return settle_digest(res_type, item, digest_of(stored) if stored else 0, bool(stored))


def settle_digest(res_type: str, item: Extracted, before: int, stored: bool) -> Extracted:
    """The item once its fresh rows were compared with stored rows (of its codes) whose digests sum to `before`;
    `stored`: there were any."""
    assert item.pending is not None, "a pending item"
    if item.exact:  # every code was extracted: the fingerprint is that of the fresh rows
        differs, fingerprint = item.fingerprint != as_fingerprint(before), item.fingerprint
    else:
        assert item.read_hash is not None, "only fingerprinted rows are extracted in part"
        fresh = digest_sum(item.pending)
        differs, fingerprint = fresh != before, moved(item.read_hash, before, fresh)
    records = index_records(item.res_id, res_type, item.pending) if differs else None
    return Extracted(item.res_id, item.version, item.read_hash, fingerprint, records, item.codes, item.current,
                     item.exact, None, stored)


async def _write_indexes(conn: Connection, res_type: str, extracted: list[Extracted], generation: int,
                         optimistic_lock: bool) -> set[int]:
    """Rewrite the index rows of the resources whose rows differ from those stored: those compared whole get only
    the rows that differ deleted and COPYed, the others all the rows of their stale codes. Returns the resources
    whose rows changed."""
    marked = [item for item in extracted if item.differs or not item.current]
    if not marked:  # a forced job over current rows: extraction was all it cost
        return set()
    locked = {row["res_id"] for row in await conn.fetch(
        MARK_INDEXED, [item.res_id for item in marked], [item.version for item in marked],
        [item.fingerprint for item in marked], generation, optimistic_lock, [item.read_hash for item in marked],
        current_extractor().number)}
    # Resources indexed at different generations have different stale codes: one DELETE per set of codes.
    by_codes: dict[frozenset[str] | None, list[Extracted]] = defaultdict(list)
    for item in marked:
        if item.records is not None and item.res_id in locked:  # the rows differ
            by_codes[item.codes].append(item)
    for codes, written in by_codes.items():
        records: IndexRecords = {table: [] for table in TABLE_COLUMNS}
        for item in written:
            for table, table_records in (item.records or {}).items():
                records[table].extend(table_records)
        if codes is None:  # compared whole: only the rows that differ are rewritten (all, when none were stored)
            await rewrite_indexes(conn, [item.res_id for item in written if item.replaces], records)
        else:
            hashes = [sp_hash(res_type, code) for code in codes]
            await replace_indexes(conn, [item.res_id for item in written if item.replaces], records, hashes)
    return {item.res_id for written in by_codes.values() for item in written}


def batch_outcome(res_type: str, rows: list[asyncpg.Record], changed: set[int],
                  failures: dict[int, str]) -> BatchOutcome:
    """The batch's counts: a resource changed or deleted since the read counts as unchanged (its own write
    indexed it), as does one whose rows and body were current already."""
    reported = [{"id": f"{res_type}/{row['fhir_id']}", "reason": failures[row["res_id"]][:MAX_FAILURE_REASON]}
                for row in rows if row["res_id"] in failures]
    changed -= failures.keys()
    return BatchOutcome(rows[-1]["res_id"], len(changed), len(rows) - len(changed) - len(reported), reported)
