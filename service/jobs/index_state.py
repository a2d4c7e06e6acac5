"""Bounded look-ups of the state of live resources' index rows (the partial index `resource_index_state` on
(index_extractor, res_type, index_gen)): which extractors wrote them. Each costs index probes in proportion
to what it finds, not to the table."""

from __future__ import annotations

from service.db import Connection

# A loose index scan: one probe per distinct extractor (a handful), then one for rows of none (NULL).
SELECT_EXTRACTORS = """
WITH RECURSIVE extractors (extractor) AS (
    (SELECT index_extractor FROM resource WHERE NOT deleted AND index_extractor IS NOT NULL
     ORDER BY index_extractor LIMIT 1)
    UNION ALL
    SELECT (SELECT r.index_extractor FROM resource r WHERE NOT r.deleted AND r.index_extractor > e.extractor
            ORDER BY r.index_extractor LIMIT 1)
    FROM extractors e WHERE e.extractor IS NOT NULL
)
SELECT extractor FROM extractors WHERE extractor IS NOT NULL
UNION ALL
SELECT NULL WHERE EXISTS (SELECT FROM resource WHERE NOT deleted AND index_extractor IS NULL)"""


async def extractors_present(conn: Connection) -> list[int | None]:
    """The extractors that indexed live resources; None stands for resources indexed by a release that did
    not record its extractor."""
    return [row["extractor"] for row in await conn.fetch(SELECT_EXTRACTORS)]

