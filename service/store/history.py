"""History of versions at instance, type and system level, paged by a keyset on `ver_id`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from service.store.resources import Version

_HISTORY_COLUMNS = "ver_id, res_type, fhir_id, version, last_updated, deleted, method, body"
# $1 the exclusive upper bound of ver_id (the page cursor), $2 the lower bound of last_updated,
# $3 the page size; the scope's own parameters follow.
_HISTORY_PAGE = """
SELECT {columns} FROM resource_version
WHERE ver_id < $1 AND last_updated >= $2 {scope}
ORDER BY ver_id DESC LIMIT $3"""
HISTORY_SYSTEM = _HISTORY_PAGE.format(columns=_HISTORY_COLUMNS, scope="")
HISTORY_TYPE = _HISTORY_PAGE.format(columns=_HISTORY_COLUMNS, scope="AND res_type = $4")
HISTORY_INSTANCE = _HISTORY_PAGE.format(
    columns=_HISTORY_COLUMNS,
    scope="AND res_id = (SELECT res_id FROM resource WHERE res_type = $4 AND fhir_id = $5)",
)
COUNT_INSTANCE_VERSIONS = """
SELECT count(*) FROM resource_version
WHERE res_id = (SELECT res_id FROM resource WHERE res_type = $1 AND fhir_id = $2) AND last_updated >= $3"""

NO_CURSOR = 2**63 - 1


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    cursor: int
    method: str
    version: Version


async def history_page(
    pool: asyncpg.Pool, res_type: str | None, fhir_id: str | None,
    since: datetime, before: int | None, count: int,
) -> list[HistoryEntry]:
    """Versions newest first; `before` is the cursor of the previous page's last entry."""
    args: list[object] = [before or NO_CURSOR, since, count]
    if fhir_id is not None:
        rows = await pool.fetch(HISTORY_INSTANCE, *args, res_type, fhir_id)
    elif res_type is not None:
        rows = await pool.fetch(HISTORY_TYPE, *args, res_type)
    else:
        rows = await pool.fetch(HISTORY_SYSTEM, *args)
    return [
        HistoryEntry(
            row["ver_id"], row["method"],
            Version(row["res_type"], row["fhir_id"], row["version"], row["last_updated"], row["deleted"], row["body"]),
        )
        for row in rows
    ]


async def count_instance_versions(pool: asyncpg.Pool, res_type: str, fhir_id: str, since: datetime) -> int:
    count: int = await pool.fetchval(COUNT_INSTANCE_VERSIONS, res_type, fhir_id, since)
    return count
