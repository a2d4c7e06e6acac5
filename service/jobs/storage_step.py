"""`optimizeStorage`: rewrite stored bodies to compact JSON (no whitespace outside strings), within a
reindex batch's transaction. Nothing else of the text changes (member order, number spellings such as
1.50, string escapes), nor versions, `lastUpdated` or index rows: only insignificant bytes go."""

from __future__ import annotations

import re
from dataclasses import dataclass

import orjson

from service.db import Connection
from service.jobs.pacing import LoopSlices

# A body is rewritten only at the version that was read: an update since then wrote a compact body
# already, and an older one must never overwrite it (whatever optimisticLock says). The current
# version's copy in resource_version is the same content and goes with it.
REWRITE_CURRENT = """
WITH rewritten AS (
    UPDATE resource r SET body = u.body
    FROM unnest($1::bigint[], $2::integer[], $3::bytea[]) AS u (res_id, version, body)
    WHERE r.res_id = u.res_id AND r.version = u.version AND NOT r.deleted
    RETURNING r.res_id, r.version, r.body
), versions AS (
    UPDATE resource_version v SET body = w.body FROM rewritten w
    WHERE v.res_id = w.res_id AND v.version = w.version
)
SELECT res_id FROM rewritten"""
# Older versions never change again, so they need no lock.
SELECT_OLDER_VERSIONS = """
SELECT v.ver_id, v.res_id, v.version, v.body
FROM resource_version v JOIN unnest($1::bigint[], $2::integer[]) AS u (res_id, version)
  ON v.res_id = u.res_id AND v.version < u.version
WHERE v.body IS NOT NULL ORDER BY v.ver_id"""
REWRITE_VERSIONS = """
UPDATE resource_version v SET body = u.body FROM unnest($1::bigint[], $2::bytea[]) AS u (ver_id, body)
WHERE v.ver_id = u.ver_id"""


@dataclass(frozen=True, slots=True)
class BodyRewrite:
    res_id: int
    version: int
    body: bytes
    differs: bool  # False: already compact, rewritten because the job was forced


# A JSON string (kept as it is), or a run of whitespace outside strings (dropped).
_STRING_OR_SPACE = re.compile(rb'("(?:[^"\\]|\\.)*")|[ \t\n\r]+')


def compact_body(body: bytes) -> bytes:
    """The body without insignificant whitespace; raises ValueError when it is not JSON. Unlike a parse
    and re-serialisation, this keeps every number as written (FHIR decimals carry their precision)."""
    orjson.loads(body)
    return _STRING_OR_SPACE.sub(lambda match: match.group(1) or b"", body)


async def rewrite_current(conn: Connection, rewrites: list[BodyRewrite]) -> set[int]:
    """Write the current versions' compact bodies; returns the resources whose stored bytes changed."""
    if not rewrites:
        return set()
    written = {row["res_id"] for row in await conn.fetch(
        REWRITE_CURRENT, [item.res_id for item in rewrites], [item.version for item in rewrites],
        [item.body for item in rewrites])}
    return {item.res_id for item in rewrites if item.differs and item.res_id in written}


async def rewrite_history(conn: Connection, versions: dict[int, int],
                          force: bool) -> tuple[set[int], dict[int, str]]:
    """Compact bodies for the versions before `versions[res_id]` (ALL_VERSIONS). Returns the resources
    with a rewritten version, and the reason of each resource with a version that is not JSON."""
    if not versions:
        return set(), {}
    rows = await conn.fetch(SELECT_OLDER_VERSIONS, list(versions), list(versions.values()))
    ver_ids: list[int] = []
    bodies: list[bytes] = []
    changed: set[int] = set()
    failures: dict[int, str] = {}
    slices = LoopSlices()
    for row in rows:
        await slices.pause()
        try:
            body = compact_body(row["body"])
        except ValueError as exc:
            failures.setdefault(row["res_id"], f"version {row['version']} is not JSON: {exc}")
            continue
        if force or body != row["body"]:
            ver_ids.append(row["ver_id"])
            bodies.append(body)
        if body != row["body"]:
            changed.add(row["res_id"])
    if ver_ids:
        await conn.execute(REWRITE_VERSIONS, ver_ids, bodies)
    return changed, failures
