"""Bounded look-ups of the state of live resources' index rows (the table `resource_index_state`, a row per live
resource, and its index on (index_extractor, res_type, index_gen)): which extractors wrote them, and which
resources of a type were indexed below a generation. Each costs index probes in proportion to what it finds,
not to the table."""

from __future__ import annotations

from service.db import Connection

# A loose index scan: one probe per distinct extractor (a handful), then one for rows of none (NULL).
SELECT_EXTRACTORS = """
WITH RECURSIVE extractors (extractor) AS (
    (SELECT index_extractor FROM resource_index_state WHERE index_extractor IS NOT NULL
     ORDER BY index_extractor LIMIT 1)
    UNION ALL
    SELECT (SELECT s.index_extractor FROM resource_index_state s WHERE s.index_extractor > e.extractor
            ORDER BY s.index_extractor LIMIT 1)
    FROM extractors e WHERE e.extractor IS NOT NULL
)
SELECT extractor FROM extractors WHERE extractor IS NOT NULL
UNION ALL
SELECT NULL WHERE EXISTS (SELECT FROM resource_index_state WHERE index_extractor IS NULL)"""
# Per extractor, a range of the index: (extractor, res_type, index_gen < $2). IS NOT DISTINCT FROM would not
# use the index, so rows of no extractor have a statement of their own.
_BELOW_GENERATION = """
SELECT res_id FROM resource_index_state WHERE {extractor} AND res_type = $1 AND index_gen < $2 LIMIT $3"""
SELECT_BELOW_GENERATION = _BELOW_GENERATION.format(extractor="index_extractor = $4")
SELECT_BELOW_GENERATION_UNKNOWN = _BELOW_GENERATION.format(extractor="index_extractor IS NULL")


async def extractors_present(conn: Connection) -> list[int | None]:
    """The extractors that indexed live resources; None stands for resources indexed by a release that did
    not record its extractor."""
    return [row["extractor"] for row in await conn.fetch(SELECT_EXTRACTORS)]


async def indexed_below(conn: Connection, res_type: str, generation: int, limit: int) -> list[int]:
    """Up to `limit` live resources of the type whose rows were indexed below the catalog generation."""
    found: list[int] = []
    for extractor in await extractors_present(conn):
        if len(found) >= limit:
            break
        arguments = (res_type, generation, limit - len(found))
        rows = await (conn.fetch(SELECT_BELOW_GENERATION_UNKNOWN, *arguments) if extractor is None
                      else conn.fetch(SELECT_BELOW_GENERATION, *arguments, extractor))
        found += [row["res_id"] for row in rows]
    return found
