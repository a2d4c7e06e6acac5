"""Search execution: one page of matches, the total, and the included resources, read in one snapshot."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import asyncpg

from service.db import Connection
from service.fhir.errors import FhirError
from service.pools import Pool
from service.search.cursor import BACKWARD, SortValue
from service.search.includes import Include
from service.search.param_hash import sp_hash
from service.search.query import SearchQuery
from service.search.sql import Statement, count_statement, page_statement
from service.store.fulltext import require_on

# Resources the given ones refer to (_include), and resources referring to the given ones (_revinclude), only of
# the include's types: the HTTP layer narrows those to the types the token may read. The given resources are the
# page's matches, then (`:iterate`) the resources the previous round included. The target columns are "C"-collated
# and resource's are not: compared in resource's collation, each reference finds its target through
# resource_type_id_key (compared without one, no index serves the join and the whole table is scanned).
SELECT_INCLUDED = """
SELECT DISTINCT t.res_id, t.res_type, t.fhir_id, t.body
FROM idx_reference x JOIN resource t
  ON t.res_type = x.target_type COLLATE "default" AND t.fhir_id = x.target_id COLLATE "default"
WHERE x.res_id = ANY($1::bigint[]) AND x.sp_hash = ANY($2::bigint[]) AND NOT t.deleted
  AND t.res_type = ANY($3::text[])
ORDER BY t.res_id LIMIT $4"""
SELECT_REVINCLUDED = """
SELECT DISTINCT s.res_id, s.res_type, s.fhir_id, s.body
FROM idx_reference x JOIN resource s ON s.res_id = x.res_id
WHERE x.sp_hash = ANY($1::bigint[]) AND NOT s.deleted AND s.res_type = ANY($4::text[])
  AND (x.target_type, x.target_id) IN (SELECT * FROM unnest($2::text[], $3::text[]))
ORDER BY s.res_id LIMIT $5"""
# `:iterate` includes are applied again to what the previous round added, at most this many times: each round is
# one more statement per include, and three reach e.g. PractitionerRole -> Organization -> its partOf -> its partOf.
MAX_ITERATE_ROUNDS = 3


@dataclass(frozen=True, slots=True)
class Found:
    res_id: int
    res_type: str
    fhir_id: str
    body: bytes
    sort_values: tuple[SortValue, ...] = ()


@dataclass
class SearchResult:
    matches: list[Found] = field(default_factory=list)  # in sort order
    more_before: bool = False  # a backward page found rows before it
    more_after: bool = False  # a forward page found rows after it
    total: int | None = None
    included: list[Found] = field(default_factory=list)
    included_truncated: bool = False
    iteration_cut: bool = False  # the last `:iterate` round still added resources: further ones are left out


class Budget:
    """What is left of a search's time: each statement gets the rest as its timeout, at which asyncpg asks
    PostgreSQL to cancel it (the pool's statement_timeout, FHIR_STATEMENT_TIMEOUT_MS, ends it should this
    process be gone). A client-side timeout costs no round trip, where a statement_timeout set before each
    statement costs one."""

    def __init__(self, timeout_ms: int) -> None:
        self._deadline = time.monotonic() + timeout_ms / 1000

    def left(self) -> float:
        return max(0.001, self._deadline - time.monotonic())


async def run_search(pool: Pool, query: SearchQuery, count_total: bool, include_limit: int,
                     timeout_ms: int) -> SearchResult:
    """Page, count (when `count_total`) and includes in one read-only repeatable-read snapshot, all within
    `timeout_ms` (a 503 beyond it). A search of one statement (a page, or the count of `_summary=count`) is a
    snapshot of its own and runs without the transaction's two round trips."""
    budget = Budget(timeout_ms)
    async with pool.acquire_stateless() as conn:
        try:
            if not (count_total or query.includes or query.full_text_code()):
                return await _run(conn, budget, query, count_total, include_limit)
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                return await _run(conn, budget, query, count_total, include_limit)
        except (TimeoutError, asyncpg.QueryCanceledError):  # not PoolExhausted: the acquire is outside
            raise FhirError(503, f"The search was cancelled after {timeout_ms} ms (FHIR_SEARCH_TIMEOUT_MS): narrow "
                            "it with more selective parameters", code="timeout") from None


async def _run(conn: Connection, budget: Budget, query: SearchQuery, count_total: bool,
               include_limit: int) -> SearchResult:
    if full_text := query.full_text_code():
        await require_on(conn, full_text)  # in this snapshot: `on` with every row, or a 400
    if query.summary_count:
        return SearchResult(total=await _fetch_count(conn, count_statement(query), budget))
    result = await _fetch_page(conn, query, budget)
    if count_total:
        result.total = await _fetch_count(conn, count_statement(query), budget)
    if query.includes and result.matches:
        await _fetch_included(conn, budget, query.includes, result, include_limit)
    return result


async def _fetch_count(conn: Connection, statement: Statement, budget: Budget) -> int:
    count: int = await conn.fetchval(statement.text, *statement.params, timeout=budget.left())
    return count


async def _fetch_page(conn: Connection, query: SearchQuery, budget: Budget) -> SearchResult:
    statement = page_statement(query)
    rows = await conn.fetch(statement.text, *statement.params, timeout=budget.left())
    more = len(rows) > query.count
    found = [Found(row[0], row[1], row[2], row[3], tuple(row[4:])) for row in rows[:query.count]]
    if query.cursor is not None and query.cursor.direction == BACKWARD:
        return SearchResult(found[::-1], more_before=more)
    return SearchResult(found, more_after=more)


async def _fetch_included(conn: Connection, budget: Budget, includes: Sequence[Include], result: SearchResult,
                          limit: int) -> None:
    """Included resources, each once, none of them a match, at most `limit`: every include applied to the matches,
    then the `:iterate` ones to what the previous round added, for MAX_ITERATE_ROUNDS more rounds."""
    seen = {found.res_id for found in result.matches}
    given: Sequence[Found] = result.matches
    iterated = [include for include in includes if include.iterate]
    for round_includes in [includes, *[iterated] * MAX_ITERATE_ROUNDS]:
        if not round_includes or not given:
            return
        added = []
        for include in round_includes:
            if not include.types:
                continue  # narrowed to nothing: no type it could return is readable
            statement = include_statement(include, given, limit + 1)
            rows = await conn.fetch(statement.text, *statement.params, timeout=budget.left())
            added += [Found(row[0], row[1], row[2], row[3]) for row in rows if row[0] not in seen]
            seen.update(row[0] for row in rows)
            if len(result.included) + len(added) > limit or len(rows) > limit:
                result.included = [*result.included, *added][:limit]
                result.included_truncated = True
                return
        result.included += added
        given = added
    result.iteration_cut = bool(iterated and given)


def include_statement(include: Include, given: Sequence[Found], limit: int) -> Statement:
    hashes = [sp_hash(source, code) for source, code in include.parameters]
    types = list(include.types)
    if include.reverse:
        targets = ([found.res_type for found in given], [found.fhir_id for found in given])
        return Statement(SELECT_REVINCLUDED, (hashes, *targets, types, limit))
    return Statement(SELECT_INCLUDED, ([found.res_id for found in given], hashes, types, limit))
