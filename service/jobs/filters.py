"""Search filters of a reindex job (`url=Observation?code=...`): parsed with the same code as
`GET [type]?`, stored with the job as query strings, and turned into each chunk's read statement."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from urllib.parse import parse_qsl

from service.search.query import SearchQuery, parse_search
from service.search.registry import Registry
from service.search.sql import Statement, chunk_statement
from service.search.terms import SearchContext


def parse_filters(registry: Registry, base: str, searches: Sequence[tuple[str, str]]) -> dict[str, list[str]]:
    """{type: [query, ...]} of the searches; an empty list means every resource of the type. Raises a
    400 FhirError for a parameter the type does not have, as a search would."""
    filters: dict[str, list[str] | None] = {}  # None: the whole type
    for resource_type, query in searches:
        if not _parse(registry, base, resource_type, query).terms:
            filters[resource_type] = None  # an unfiltered URL covers the type whatever else names it
        elif (queries := filters.setdefault(resource_type, [])) is not None:
            queries.append(query)
    return {resource_type: queries or [] for resource_type, queries in filters.items()}


def chunk_read(registry: Registry, base: str, resource_type: str, queries: Sequence[str], after: int,
               upto: int) -> Statement:
    return chunk_statement([_parse(registry, base, resource_type, query) for query in queries], after, upto)


def count_read(registry: Registry, base: str, resource_type: str, queries: Sequence[str], upto: int) -> Statement:
    """How many resources of the type up to res_id `upto` match any of the queries (a job's estimate)."""
    read = chunk_read(registry, base, resource_type, queries, 0, upto)
    return Statement(f"SELECT count(*) FROM ({read.text}) matched", read.params)


def _parse(registry: Registry, base: str, resource_type: str, query: str) -> SearchQuery:
    context = SearchContext(registry, base, datetime.now(timezone.utc), lenient=False, default_count=1, max_count=1)
    return parse_search(resource_type, parse_qsl(query, keep_blank_values=True), context)


def is_filtered(filters: Mapping[str, list[str]]) -> bool:
    return any(filters.values())
