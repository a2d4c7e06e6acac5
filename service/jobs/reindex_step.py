"""One chunk of a reindex job: stream its rows with a server-side cursor in a short read-only
transaction, extract index rows (pure), and write each batch in its own short transaction that
replaces the changed resources' index rows through COPY and advances the chunk's checkpoint."""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import asyncpg
import orjson

from service.jobs.filters import chunk_read
from service.jobs.repository import CHECKPOINT_CHUNK, ClaimedChunk
from service.search.catalog import Catalogs
from service.store.indexes import (
    SELECT_BY_RESOURCES,
    SET_INDEX_GEN,
    TABLE_COLUMNS,
    IndexRecords,
    index_records,
    replace_indexes,
)

READ_CHUNK = """
SELECT res_id, fhir_id, version, index_gen, body FROM resource
WHERE res_type = $1 AND res_id > $2 AND res_id <= $3 AND NOT deleted ORDER BY res_id"""
# Optimistic lock: a resource updated or deleted since the read keeps the rows its own write made.
LOCK_BATCH = "SELECT res_id, version FROM resource WHERE res_id = ANY($1::bigint[]) AND NOT deleted FOR UPDATE"
# Extraction and comparison are CPU work on the event loop: yield this often so probes and reads keep
# their latency during a reindex.
YIELD_EVERY = 100
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


@dataclass(frozen=True, slots=True)
class Extracted:
    res_id: int
    version: int
    records: IndexRecords


async def run_chunk(read_conn: asyncpg.Connection, write_conn: asyncpg.Connection, chunk: ClaimedChunk,
                    catalogs: Catalogs, owner: str, lease_seconds: float,
                    on_batch: Callable[[BatchOutcome, float], None] = lambda _outcome, _seconds: None) -> None:
    """Process the chunk from its checkpoint to its end, telling `on_batch` what each committed batch did
    and how long it took; raises ChunkCancelled when the job is cancelled."""
    batch_size = int(chunk.parameters.get("batchSize", 500))
    force = bool(chunk.parameters.get("force", False))
    async with read_conn.transaction(isolation="repeatable_read", readonly=True):
        cursor = await read_conn.cursor(*_chunk_read(chunk, catalogs))
        while rows := await cursor.fetch(batch_size):
            started = time.perf_counter()
            # The batch's index writes and its checkpoint commit together: a crash loses at most this batch.
            async with write_conn.transaction():
                outcome = await write_batch(write_conn, chunk, rows, catalogs, force)
                cancelled = await write_conn.fetchval(
                    CHECKPOINT_CHUNK, chunk.job_id, chunk.seq, outcome.last_res_id, outcome.processed,
                    outcome.changed, outcome.unchanged, len(outcome.failures),
                    outcome.failures, lease_seconds, owner)
                if cancelled is None:  # rolls the batch back: the chunk is someone else's now
                    raise LeaseLost(f"chunk {chunk.seq} of job {chunk.job_id} was taken over by another worker")
            on_batch(outcome, time.perf_counter() - started)
            if cancelled:
                raise ChunkCancelled(f"job {chunk.job_id} was cancelled")
            await asyncio.sleep(0)  # let requests and probes run between batches


def _chunk_read(chunk: ClaimedChunk, catalogs: Catalogs) -> tuple[object, ...]:
    """The statement and arguments that stream the chunk's resources from its checkpoint."""
    queries = chunk.parameters.get("filters", {}).get(chunk.res_type)
    if not queries:
        return READ_CHUNK, chunk.res_type, chunk.checkpoint, chunk.hi
    statement = chunk_read(catalogs.registry, chunk.parameters["base"], chunk.res_type, queries,
                           chunk.checkpoint, chunk.hi)
    return statement.text, *statement.params


async def write_batch(conn: asyncpg.Connection, chunk: ClaimedChunk, rows: list[asyncpg.Record],
                      catalogs: Catalogs, force: bool) -> BatchOutcome:
    """Extract and write one batch inside the caller's transaction (which also holds the checkpoint)."""
    catalog = catalogs.current
    outcome = BatchOutcome(last_res_id=rows[-1]["res_id"])
    extracted = []
    for number, row in enumerate(rows, start=1):
        if number % YIELD_EVERY == 0:
            await asyncio.sleep(0)
        if row["index_gen"] == catalog.generation and not force:
            outcome.unchanged += 1  # indexed with these definitions already: a read is all it costs
            continue
        try:
            resource = orjson.loads(row["body"])
            records = index_records(row["res_id"], chunk.res_type, catalog.registry.extract(resource))
        except ValueError as exc:
            failure = {"id": f"{chunk.res_type}/{row['fhir_id']}", "reason": str(exc)[:MAX_FAILURE_REASON]}
            outcome.failures.append(failure)
            continue
        extracted.append(Extracted(row["res_id"], row["version"], records))
    await _write(conn, extracted, catalog.generation, outcome, chunk.parameters.get("optimisticLock", True))
    return outcome


async def _write(conn: asyncpg.Connection, extracted: list[Extracted], generation: int, outcome: BatchOutcome,
                 optimistic_lock: bool) -> None:
    if not extracted:
        return
    versions = {row["res_id"]: row["version"] for row in
                await conn.fetch(LOCK_BATCH, [item.res_id for item in extracted])}
    # Without the optimistic lock (as HAPI's optimisticLock=false) the read's rows are written anyway.
    current = [item for item in extracted if item.res_id in versions
               and (versions[item.res_id] == item.version or not optimistic_lock)]
    outcome.unchanged += len(extracted) - len(current)  # changed since the read: its own write indexed it
    stored = await _stored_rows(conn, [item.res_id for item in current])
    changed = []
    for number, item in enumerate(current, start=1):
        if number % YIELD_EVERY == 0:
            await asyncio.sleep(0)
        if _differs(item, stored):
            changed.append(item)
    outcome.changed += len(changed)
    outcome.unchanged += len(current) - len(changed)
    if changed:
        records: IndexRecords = {table: [] for table in TABLE_COLUMNS}
        for item in changed:
            for table, table_records in item.records.items():
                records[table].extend(table_records)
        await replace_indexes(conn, [item.res_id for item in changed], records)
    await conn.execute(SET_INDEX_GEN, [item.res_id for item in current], generation)


async def _stored_rows(conn: asyncpg.Connection, res_ids: list[int]) -> dict[tuple[str, int], Counter[tuple]]:
    """The stored index rows of the resources, per (table, res_id), as multisets."""
    stored: dict[tuple[str, int], Counter[tuple]] = defaultdict(Counter)
    if res_ids:
        for table, statement in SELECT_BY_RESOURCES.items():
            for row in await conn.fetch(statement, res_ids):
                stored[(table, row[0])][tuple(row)] += 1
            await asyncio.sleep(0)
    return stored


def _differs(item: Extracted, stored: dict[tuple[str, int], Counter[tuple]]) -> bool:
    return any(Counter(item.records[table]) != stored.get((table, item.res_id), Counter()) for table in TABLE_COLUMNS)
