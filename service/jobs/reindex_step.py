"""One chunk of a reindex job: stream its rows with a server-side cursor in a short read-only
transaction, extract index rows (pure), and write each batch in its own short transaction that
replaces the changed resources' index rows through COPY and advances the chunk's checkpoint."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import NamedTuple

import asyncpg
import orjson

from service.jobs.filters import chunk_read
from service.jobs.pacing import LoopSlices
from service.jobs.repository import CHECKPOINT_CHUNK, ClaimedChunk
from service.jobs.start import ReindexPlan
from service.jobs.storage_step import BodyRewrite, canonical_body, rewrite_current, rewrite_history
from service.search.catalog import Catalogs
from service.search.param_hash import sp_hash
from service.search.rows import IndexRows, fingerprint, only_codes
from service.store.indexes import TABLE_COLUMNS, IndexRecords, index_records, replace_indexes

READ_CHUNK = """
SELECT res_id, fhir_id, version, index_gen, index_hash, body FROM resource
WHERE res_type = $1 AND res_id > $2 AND res_id <= $3 AND NOT deleted ORDER BY res_id"""
# One statement takes the row locks, applies the optimistic lock ($5: a resource updated or deleted since
# the read keeps the rows its own write made) and records the generation and fingerprint of the rows
# about to be written; it returns the resources whose rows are to be written.
MARK_INDEXED = """
UPDATE resource r SET index_gen = $4, index_hash = u.index_hash
FROM unnest($1::bigint[], $2::integer[], $3::bigint[]) AS u (res_id, version, index_hash)
WHERE r.res_id = u.res_id AND NOT r.deleted AND (r.version = u.version OR NOT $5)
RETURNING r.res_id"""
MAX_FAILURE_REASON = 300


class ChunkCancelled(Exception):
    """The job was cancelled: the chunk stops after the batch that saw it (that batch is kept)."""


class LeaseLost(Exception):
    """Another worker took the chunk over (our lease expired): stop without writing."""


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
    rows: IndexRows
    fingerprint: int
    differs: bool  # from the stored rows' fingerprint
    codes: frozenset[str] | None  # the codes whose rows to rewrite if they differ (None: every code)
    current: bool  # indexed at this catalog generation already: nothing to record unless the rows differ


@dataclass(frozen=True, slots=True)
class PreparedBatch:
    """A batch read and extracted, ready for its write transaction."""

    rows: list[asyncpg.Record]
    started: float  # perf_counter when its extraction began: a batch's latency runs from there to its commit
    generation: int  # of the catalog the rows were extracted with
    extracted: list[Extracted]
    rewrites: list[BodyRewrite]
    failures: dict[int, str]  # res_id -> reason


async def run_chunk(read_conn: asyncpg.Connection, write_conn: asyncpg.Connection, chunk: ClaimedChunk,
                    catalogs: Catalogs, owner: str, lease_seconds: float,
                    on_batch: Callable[[BatchOutcome, float], None] = lambda _outcome, _seconds: None) -> None:
    """Process the chunk from its checkpoint to its end, telling `on_batch` what each committed batch did
    and how long it took; raises ChunkCancelled when the job is cancelled.

    Batches are pipelined: while Postgres writes one batch, the next one is read and extracted, so the
    database's work and ours overlap. Batches still commit one at a time and in order."""
    plan = ReindexPlan.from_parameters(chunk.parameters)
    writing: asyncio.Task[tuple[BatchOutcome, bool, float]] | None = None
    try:
        async with read_conn.transaction(isolation="repeatable_read", readonly=True):
            cursor = await read_conn.cursor(*_chunk_read(chunk, catalogs))
            while rows := await cursor.fetch(plan.batch_size):
                batch = await prepare_batch(chunk, rows, catalogs, plan)
                if writing is not None:
                    await _committed(writing, chunk, on_batch)
                writing = asyncio.create_task(_commit(write_conn, chunk, batch, plan, owner, lease_seconds))
        if writing is not None:
            await _committed(writing, chunk, on_batch)
    finally:
        if writing is not None and not writing.done():  # we are failing or being cancelled: so is the write
            writing.cancel()
            with suppress(asyncio.CancelledError):
                await writing


async def _commit(conn: asyncpg.Connection, chunk: ClaimedChunk, batch: PreparedBatch, plan: ReindexPlan,
                  owner: str, lease_seconds: float) -> tuple[BatchOutcome, bool, float]:
    """Write the batch and advance the checkpoint in one transaction (a crash loses at most this batch);
    returns what it did, whether the job was cancelled, and the batch's seconds from extraction to commit."""
    async with conn.transaction():
        outcome = await write_prepared(conn, chunk, batch, plan)
        cancelled = await conn.fetchval(
            CHECKPOINT_CHUNK, chunk.job_id, chunk.seq, outcome.last_res_id, outcome.processed, outcome.changed,
            outcome.unchanged, len(outcome.failures), outcome.failures, lease_seconds, owner)
        if cancelled is None:  # rolls the batch back: the chunk is someone else's now
            raise LeaseLost(f"chunk {chunk.seq} of job {chunk.job_id} was taken over by another worker")
    return outcome, cancelled, time.perf_counter() - batch.started


async def _committed(writing: asyncio.Task, chunk: ClaimedChunk,
                     on_batch: Callable[[BatchOutcome, float], None]) -> None:
    outcome, cancelled, seconds = await writing
    on_batch(outcome, seconds)
    if cancelled:
        raise ChunkCancelled(f"job {chunk.job_id} was cancelled")


def _chunk_read(chunk: ClaimedChunk, catalogs: Catalogs) -> tuple[object, ...]:
    """The statement and arguments that stream the chunk's resources from its checkpoint."""
    queries = chunk.parameters.get("filters", {}).get(chunk.res_type)
    if not queries:
        return READ_CHUNK, chunk.res_type, chunk.checkpoint, chunk.hi
    statement = chunk_read(catalogs.registry, chunk.parameters["base"], chunk.res_type, queries,
                           chunk.checkpoint, chunk.hi)
    return statement.text, *statement.params


async def write_batch(conn: asyncpg.Connection, chunk: ClaimedChunk, rows: list[asyncpg.Record],
                      catalogs: Catalogs, plan: ReindexPlan) -> BatchOutcome:
    """Extract and write one batch inside the caller's transaction."""
    return await write_prepared(conn, chunk, await prepare_batch(chunk, rows, catalogs, plan), plan)


async def prepare_batch(chunk: ClaimedChunk, rows: list[asyncpg.Record], catalogs: Catalogs,
                        plan: ReindexPlan) -> PreparedBatch:
    """Parse and extract what the batch's write needs (CPU work, yielding the loop now and then)."""
    catalog = catalogs.current
    batch = PreparedBatch(rows, time.perf_counter(), catalog.generation, [], [], {})
    slices, stale_codes = LoopSlices(), {}
    for row in rows:
        await slices.pause()
        # Only the rows of codes whose definitions changed since the resource was indexed can be stale; a
        # resource with none costs only this read. Unknown rows (no fingerprint) and a forced job check all.
        index_gen = row["index_gen"]
        stale = stale_codes.get(index_gen)
        if stale is None:
            stale = stale_codes[index_gen] = catalog.stale_codes(chunk.res_type, index_gen)
        every_code = plan.force or row["index_hash"] is None
        reindex = plan.reindex_search_parameters and (every_code or bool(stale))
        if not reindex and plan.optimize_storage == "NONE":
            continue
        try:
            resource = orjson.loads(row["body"])
            if reindex:
                index_rows = catalog.registry.extract(resource)
                digest = fingerprint(index_rows)
                batch.extracted.append(Extracted(row["res_id"], row["version"], index_rows, digest,
                                                 digest != row["index_hash"], None if every_code else stale,
                                                 index_gen == catalog.generation))
        except ValueError as exc:  # not JSON, or not the shape of its type
            batch.failures[row["res_id"]] = str(exc)
            continue
        if plan.optimize_storage != "NONE":
            body = canonical_body(resource)
            if plan.force or body != row["body"]:
                batch.rewrites.append(BodyRewrite(row["res_id"], row["version"], body, body != row["body"]))
    return batch


async def write_prepared(conn: asyncpg.Connection, chunk: ClaimedChunk, batch: PreparedBatch,
                         plan: ReindexPlan) -> BatchOutcome:
    """Write a prepared batch inside the caller's transaction (which also holds the checkpoint)."""
    changed = await _write_indexes(conn, chunk.res_type, batch.extracted, batch.generation, plan)
    changed |= await rewrite_current(conn, batch.rewrites)
    if plan.optimize_storage == "ALL_VERSIONS":
        current = {row["res_id"]: row["version"] for row in batch.rows if row["res_id"] not in batch.failures}
        changed |= await rewrite_history(conn, current, plan.force, batch.failures)
    return _outcome(chunk.res_type, batch.rows, changed, batch.failures)


async def _write_indexes(conn: asyncpg.Connection, res_type: str, extracted: list[Extracted], generation: int,
                         plan: ReindexPlan) -> set[int]:
    """Rewrite the index rows of the resources whose rows differ from their fingerprint: DELETE the rows
    of their stale codes (or all) and COPY the new ones. Returns the resources whose rows changed."""
    marked = [item for item in extracted if item.differs or not item.current]
    if not marked:  # a forced job over current rows: extraction was all it cost
        return set()
    locked = {row["res_id"] for row in await conn.fetch(
        MARK_INDEXED, [item.res_id for item in marked], [item.version for item in marked],
        [item.fingerprint for item in marked], generation, plan.optimistic_lock)}
    by_codes: dict[frozenset[str] | None, list[Extracted]] = defaultdict(list)
    for item in marked:
        if item.res_id in locked and item.differs:
            by_codes[item.codes].append(item)
    for codes, items in by_codes.items():  # one group, as a rule: a batch was indexed at one generation
        records: IndexRecords = {table: [] for table in TABLE_COLUMNS}
        slices = LoopSlices()
        for item in items:
            await slices.pause()
            index_records(item.res_id, res_type, item.rows if codes is None else only_codes(item.rows, codes), records)
        hashes = None if codes is None else [sp_hash(res_type, code) for code in codes]
        await replace_indexes(conn, [item.res_id for item in items], records, hashes)
    return {item.res_id for items in by_codes.values() for item in items}


def _outcome(res_type: str, rows: list[asyncpg.Record], changed: set[int], failures: dict[int, str]) -> BatchOutcome:
    """The batch's counts: a resource changed or deleted since the read counts as unchanged (its own write
    indexed it), as does one whose rows and body were current already."""
    reported = [{"id": f"{res_type}/{row['fhir_id']}", "reason": failures[row["res_id"]][:MAX_FAILURE_REASON]}
                for row in rows if row["res_id"] in failures]
    changed -= failures.keys()
    return BatchOutcome(rows[-1]["res_id"], len(changed), len(rows) - len(changed) - len(reported), reported)
