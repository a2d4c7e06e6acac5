"""Search execution: one page of matches, the total, and the included resources, read in one snapshot."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from service.db import Connection
from service.fhir.errors import FhirError
from service.pools import Pool
from service.search.cursor import BACKWARD, SortValue
from service.search.includes import Include
from service.search.param_hash import sp_hash
from service.search.query import SearchQuery
from service.search.sql import Statement, count_statement, output_order, page_statement
from service.search.sql_filters import Parameters
from service.store.fulltext import require_on

# Resources the given ones refer to (_include), and resources referring to the given ones (_revinclude), only of
# the include's types: the HTTP layer narrows those to the types the token may read. The given resources, the
# relation `given` (res_id, res_type, fhir_id), are the page's matches, then (`:iterate`) the resources the previous
# round included. The target columns are "C"-collated and resource's are not: compared in resource's collation,
# each reference finds its target through resource_type_id_key (compared without one, no index serves the join and
# the whole table is scanned), and the given resources in "C" find their referrers through the target index.
SELECT_INCLUDED = """
SELECT DISTINCT t.res_id, t.res_type, t.fhir_id, t.body
FROM idx_reference x JOIN resource t
  ON t.res_type = x.target_type COLLATE "default" AND t.fhir_id = x.target_id COLLATE "default"
WHERE x.res_id IN (SELECT res_id FROM given) AND x.sp_hash = ANY({hashes}::bigint[]) AND NOT t.deleted
  AND t.res_type = ANY({types}::text[])
ORDER BY t.res_id LIMIT {limit}"""
SELECT_REVINCLUDED = """
SELECT DISTINCT s.res_id, s.res_type, s.fhir_id, s.body
FROM idx_reference x JOIN resource s ON s.res_id = x.res_id
WHERE x.sp_hash = ANY({hashes}::bigint[]) AND NOT s.deleted AND s.res_type = ANY({types}::text[])
  AND (x.target_type, x.target_id) IN (SELECT res_type COLLATE "C", fhir_id COLLATE "C" FROM given)
ORDER BY s.res_id LIMIT {limit}"""
# The resources of an `:iterate` round, as `given`.
GIVEN_RESOURCES = "given AS (SELECT * FROM unnest({ids}::bigint[], {types}::text[], {fhir_ids}::text[]) " \
                  "AS g (res_id, res_type, fhir_id))"
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
    `timeout_ms` (a 503 beyond it). The page and the first round of includes are one statement, a snapshot of its
    own: without a count, full text or `:iterate` rounds, it runs without the transaction's two round trips."""
    budget = Budget(timeout_ms)
    async with pool.acquire_stateless() as conn:
        try:
            if not (count_total or query.full_text_code() or any(include.iterate for include in query.includes)):
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
    statement = first_statement(query, include_limit + 1)
    rows = await conn.fetch(statement.text, *statement.params, timeout=budget.left())
    result = _page(query, rows if not query.includes else [row[2:] for row in rows if not row[0]])
    if count_total:
        result.total = await _fetch_count(conn, count_statement(query), budget)
    if query.includes:
        first_round = [[_found(row[2:]) for row in rows if row[0] == part] for part, _ in _parts(query.includes)]
        await _include_rounds(conn, budget, query.includes, result, include_limit, first_round)
    return result


async def _fetch_count(conn: Connection, statement: Statement, budget: Budget) -> int:
    count: int = await conn.fetchval(statement.text, *statement.params, timeout=budget.left())
    return count


def first_statement(query: SearchQuery, include_limit: int) -> Statement:
    """The page statement, with the first round of the query's includes applied to the page's first `count` rows
    in the same statement when it has any (one round trip, one snapshot): then each row starts with its part (0
    for the page, the include's number for an included resource) and its place in it."""
    page = page_statement(query)
    if not query.includes:
        return page
    params = Parameters()
    params.values.extend(page.params)
    no_keys = "".join(", NULL" for _ in query.sort)
    parts = [f"SELECT 0 AS part, row_number() OVER (ORDER BY {output_order(query, 'p')}) AS place, p.* FROM page p"]
    parts += [f"SELECT {part}, i.res_id, i.res_id, i.res_type, i.fhir_id, i.body{no_keys} "
              f"FROM ({_included(include, params, include_limit)}) i" for part, include in _parts(query.includes)]
    text = (f"WITH page AS MATERIALIZED ({page.text}), given AS (SELECT res_id, res_type, fhir_id FROM page p "
            f"ORDER BY {output_order(query, 'p')} LIMIT {params.add(query.count)}) "
            f"{' UNION ALL '.join(parts)} ORDER BY part, place")
    return Statement(text, tuple(params.values))


def include_statement(include: Include, given: Sequence[Found], limit: int) -> Statement:
    """An include applied to `given` (an `:iterate` round)."""
    params = Parameters()
    resources = GIVEN_RESOURCES.format(ids=params.add([found.res_id for found in given]),
                                       types=params.add([found.res_type for found in given]),
                                       fhir_ids=params.add([found.fhir_id for found in given]))
    return Statement(f"WITH {resources} {_included(include, params, limit)}", tuple(params.values))


def _parts(includes: Sequence[Include]) -> list[tuple[int, Include]]:
    """The includes that can return anything (one narrowed to no readable type cannot), numbered from 1."""
    return list(enumerate((include for include in includes if include.types), 1))


def _included(include: Include, params: Parameters, limit: int) -> str:
    template = SELECT_REVINCLUDED if include.reverse else SELECT_INCLUDED
    return template.format(hashes=params.add([sp_hash(source, code) for source, code in include.parameters]),
                           types=params.add(list(include.types)), limit=params.add(limit))


def _found(row: Any) -> Found:  # an asyncpg Record, or a slice of one
    return Found(row[0], row[1], row[2], row[3], tuple(row[4:]))


def _page(query: SearchQuery, rows: Sequence[Any]) -> SearchResult:
    more = len(rows) > query.count
    found = [_found(row) for row in rows[:query.count]]
    if query.cursor is not None and query.cursor.direction == BACKWARD:
        return SearchResult(found[::-1], more_before=more)
    return SearchResult(found, more_after=more)


async def _include_rounds(conn: Connection, budget: Budget, includes: Sequence[Include], result: SearchResult,
                          limit: int, found: list[list[Found]]) -> None:
    """Included resources, each once, none of them a match, at most `limit`: every include applied to the matches
    (`found`, per include, read with the page), then the `:iterate` ones to what the previous round added, for
    MAX_ITERATE_ROUNDS more rounds."""
    seen = {match.res_id for match in result.matches}
    iterated = [include for _, include in _parts(includes) if include.iterate]
    for round_number in range(MAX_ITERATE_ROUNDS + 1):
        added = []
        for rows in found:
            added += [resource for resource in rows if resource.res_id not in seen]
            seen.update(resource.res_id for resource in rows)
            if len(result.included) + len(added) > limit or len(rows) > limit:
                result.included = [*result.included, *added][:limit]
                result.included_truncated = True
                return
        result.included += added
        if not iterated or not added:
            return
        if round_number == MAX_ITERATE_ROUNDS:
            result.iteration_cut = True  # the last round still added resources
            return
        found = []
        for include in iterated:
            statement = include_statement(include, added, limit + 1)
            records = await conn.fetch(statement.text, *statement.params, timeout=budget.left())
            found.append([_found(record) for record in records])
