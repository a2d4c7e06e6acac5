"""The criteria of a conditional interaction (pure): the search that `If-None-Exist` or
`PUT|DELETE|PATCH [type]?search` names, and the advisory-lock key that makes requests with the same
criteria wait for each other on every replica.

The criteria are an ordinary search, parsed strictly (an unknown parameter is a 400 even under
`Prefer: handling=lenient`: ignoring it would widen the match). Result parameters (`_count`, `_sort`,
`_include`, `_format`...) select nothing and are left out; at least one search parameter must remain.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from urllib.parse import parse_qsl, urlencode

from service.fhir.errors import invalid
from service.search.query import CONTROL_PARAMETERS, SearchQuery, parse_search
from service.search.terms import SearchContext, Term


@dataclass(frozen=True)
class Criteria:
    query: SearchQuery
    text: str  # the search parameters as a query string, for messages
    lock_key: int  # pg_advisory_xact_lock key: equal for criteria that mean the same search


def parse_criteria(resource_type: str, items: Sequence[tuple[str, str]], context: SearchContext) -> Criteria:
    terms = [(name, value) for name, value in items if name not in CONTROL_PARAMETERS]
    query = parse_search(resource_type, terms, replace(context, lenient=False))
    if query.ignored:  # an unknown `_` parameter, ignored by a search, would widen what the criteria match
        raise invalid(f"The criteria must hold only parameters this server knows ({query.ignored[0]})")
    if not query.terms:
        raise invalid(f"A conditional interaction needs search parameters that select {resource_type} resources "
                      f"(got '{urlencode(items)[:200]}')")
    return Criteria(query, urlencode(terms), lock_key(query))


def if_none_exist_items(header: str, resource_type: str) -> list[tuple[str, str]]:
    """The search parameters of an `If-None-Exist` header: `identifier=x|1`, or with the type before a `?`
    (`Organization?identifier=x|1`, as some clients send it)."""
    text = header.strip()
    head, question_mark, tail = text.partition("?")
    if question_mark:
        named = head.rstrip("/").rsplit("/", 1)[-1]
        if named and named != resource_type:
            raise invalid(f"If-None-Exist names the type '{named[:64]}', but the request creates a {resource_type}")
        text = tail
    return parse_qsl(text, keep_blank_values=True)


def lock_key(query: SearchQuery) -> int:
    """A signed 64-bit key of the type and terms, the same whatever their order (and their alternatives' order)."""
    terms = sorted(repr(_ordered(term)) for term in query.terms)
    digest = hashlib.blake2b("\n".join([query.resource_type, *terms]).encode(), digest_size=8,
                             person=b"fhir-conditional").digest()
    return int.from_bytes(digest, "big", signed=True)


def _ordered(term: Term) -> Term:
    chain = _ordered(term.chain) if term.chain is not None else None
    return replace(term, values=tuple(sorted(term.values, key=repr)), chain=chain)
