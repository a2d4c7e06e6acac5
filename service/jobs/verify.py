"""`$reindex verify=true`: every resource in scope is extracted afresh and compared with the index rows
stored (jobs/stored_rows.py), read in the same snapshot as its body; nothing is written but the job's own
state. Each batch adds what differs, per resource type and parameter, to `job_difference` in the
transaction of its checkpoint (so a batch done twice after a crash counts once); the job's report lists it."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from uuid import UUID

import asyncpg

from service.db import Connection

if TYPE_CHECKING:  # the job repository imports this module, and stored_rows builds on the job modules
    from service.jobs.stored_rows import Difference

MAX_EXAMPLES = 100
TYPE_TOTAL = ""  # the code of the row counting the type's resources that differ in any parameter
RECORD_DIFFERENCES = """
INSERT INTO job_difference (job_id, res_type, code, resources, examples)
SELECT $1, $2, d.code, d.resources, d.examples
FROM jsonb_to_recordset($3::jsonb) AS d (code text, resources bigint, examples jsonb)
ON CONFLICT (job_id, res_type, code) DO UPDATE
SET resources = job_difference.resources + excluded.resources,
    examples = jsonb_path_query_array(job_difference.examples || excluded.examples, '$[0 to 99]')"""
SELECT_DIFFERENCES = """
SELECT res_type, code, resources, examples FROM job_difference WHERE job_id = $1 ORDER BY res_type, code"""


async def record_differences(conn: Connection, job_id: UUID, res_type: str, differences: Sequence[Difference]) -> None:
    """Add a batch's differences to the job's (inside the batch's transaction)."""
    if not differences:
        return
    by_code: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for found in differences:
        for code, (missing, stray) in found.codes.items():
            by_code[code].append({"id": f"{res_type}/{found.fhir_id}", "missing": missing, "stray": stray})
    rows = [{"code": TYPE_TOTAL, "resources": len(differences), "examples": []}]
    rows += [{"code": code, "resources": len(examples), "examples": examples[:MAX_EXAMPLES]}
             for code, examples in sorted(by_code.items())]
    await conn.execute(RECORD_DIFFERENCES, job_id, res_type, rows)


async def verification_notes(conn: Connection | asyncpg.Pool, job_id: UUID) -> list[str]:
    """The report's lines on what a verification found."""
    rows = await conn.fetch(SELECT_DIFFERENCES, job_id)
    if not rows:
        return ["Verified: the index rows of every resource checked are those of a fresh extraction. "
                "Nothing was written."]
    notes = ["Verified: index rows that differ from a fresh extraction, per resource type and parameter, with up "
             f"to {MAX_EXAMPLES} examples (missing: rows a fresh extraction has and the tables lack; stray: rows the "
             "tables have and a fresh extraction lacks; ?N: rows whose sp_hash N names no parameter of the type). "
             "Nothing was written."]
    for row in rows:
        if row["code"] == TYPE_TOTAL:
            notes.append(f"{row['res_type']}: {row['resources']} resources differ")
            continue
        notes.append(f"    {row['code']}: {row['resources']} resources")
        notes += [f"        {example['id']}: {example['missing']} missing, {example['stray']} stray"
                  for example in row["examples"]]
    return notes


async def differing_resources(pool: asyncpg.Pool, job_id: UUID) -> int:
    """How many resources a verification found differing."""
    found: int = await pool.fetchval(
        "SELECT coalesce(sum(resources), 0) FROM job_difference WHERE job_id = $1 AND code = $2", job_id, TYPE_TOTAL)
    return found
