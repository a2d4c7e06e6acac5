"""Compaction of the SearchParameter change log, so that a catalog refresh reads a log bounded by the
parameters in use rather than by every change ever made.

What the catalog reads from the log (`search_parameters.refresh_catalog`): the latest row of each
SearchParameter resource (its definition in force, and the code and base a later change starts from), the
rows not yet indexed (pending codes), the highest generation, and every (generation, code, base) for
`Catalog.stale_codes`. A row can go when it is none of the first three and a later row of the same code
covers all of its base types: for any `index_gen`, a code is stale on a type when some change of it on that
type is newer than `index_gen`, and the later row is newer whenever the older one is.
"""

from __future__ import annotations

from service.db import Connection

# Safe beside writers and other replicas without a lock: each row deleted is covered by a committed row of a
# higher generation, and following such rows upwards always ends at one that nothing covers, which no
# compaction deletes; rows are only ever added or marked indexed.
COMPACT_CHANGES = """
DELETE FROM search_parameter_change c
WHERE c.indexed
  AND EXISTS (SELECT FROM search_parameter_change later
              WHERE later.res_id = c.res_id AND later.generation > c.generation)
  AND EXISTS (SELECT FROM search_parameter_change later
              WHERE later.code = c.code AND later.base @> c.base AND later.generation > c.generation)"""


async def compact_change_log(conn: Connection) -> int:
    """Delete the change log rows no catalog answer depends on; returns how many."""
    status = await conn.execute(COMPACT_CHANGES)
    return int(status.split()[-1])
