"""Search -> searchset Bundle: type-level (`GET [base]/{type}?...`, `POST [base]/{type}/_search` with a form body)
and system-level (`GET [base]?_type=A,B&...`, `POST [base]/_search`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode

import orjson
from aiohttp import web

from service.fhir import exact_json
from service.fhir.bundle import bundle, outcome_entry, search_entry
from service.fhir.errors import FhirError, invalid
from service.fhir.outcome import Issue
from service.fhir.resource import check_type
from service.fhir.summary import subset, subsets
from service.http.conditional import search_context
from service.http.keys import CATALOG, POOL, PRINCIPAL, SETTINGS
from service.http.responses import fhir_response
from service.http.search_access import authorize_search, searchable_types
from service.search.cursor import BACKWARD, FORWARD, encode_cursor
from service.search.query import SearchQuery, parse_search, requested_types
from service.store.search import MAX_ITERATE_ROUNDS, Found, SearchResult, run_search

FORM = "application/x-www-form-urlencoded"
UTF8 = frozenset({"utf-8", "utf8"})


async def search_get(request: web.Request) -> web.Response:
    return await _search(request, (check_type(request.match_info["type"]),), list(request.query.items()))


async def search_post(request: web.Request) -> web.Response:
    res_type = check_type(request.match_info["type"])
    return await _search(request, (res_type,), [*request.query.items(), *await _form_items(request)])


async def system_search_get(request: web.Request) -> web.Response:
    return await _system_search(request, list(request.query.items()))


async def system_search_post(request: web.Request) -> web.Response:
    return await _system_search(request, [*request.query.items(), *await _form_items(request)])


async def _system_search(request: web.Request, items: list[tuple[str, str]]) -> web.Response:
    """`GET [base]?_type=A,B&...`: the types named (each needs its `.search`), else every type the token may search."""
    types, left_out = searchable_types(requested_types(items), request[PRINCIPAL].privileges)
    return await _search(request, types, items, system=True, left_out=left_out)


async def _form_items(request: web.Request) -> list[tuple[str, str]]:
    if not request.can_read_body:
        return []
    if request.content_type != FORM or (request.charset or "utf-8").lower() not in UTF8:
        raise FhirError(415, f"Unsupported Content-Type '{request.headers.get('Content-Type', '')[:80]}': a _search "
                        f"body must be {FORM} in UTF-8", code="not-supported")
    try:
        return parse_qsl((await request.read()).decode(), keep_blank_values=True, errors="strict")
    except UnicodeDecodeError:
        raise invalid("The _search body is not UTF-8 (its percent-encoded bytes included)") from None


def lenient(request: web.Request) -> bool:
    return any(part.strip().replace(" ", "") == "handling=lenient"
               for header in request.headers.getall("Prefer", []) for part in header.split(";"))


async def _search(request: web.Request, types: tuple[str, ...], items: list[tuple[str, str]], system: bool = False,
                  left_out: str | None = None) -> web.Response:
    return fhir_response(request, 200, await searchset(request, types, items, system, left_out))


async def searchset(request: web.Request, types: tuple[str, ...], items: list[tuple[str, str]], system: bool = False,
                    left_out: str | None = None) -> dict[str, Any]:
    """The searchset Bundle of a search by this request's token (also a Bundle entry's GET)."""
    settings, catalog = request.app[SETTINGS], request.app[CATALOG].current  # one snapshot for the whole request
    context = search_context(request, lenient(request), catalog)
    base = context.base
    query = parse_search(types[0], items, context, types[1:] if system else None)
    access = authorize_search(query, request[PRINCIPAL].privileges)
    query = access.query
    count_total = query.total == "accurate"
    result = await run_search(request.app[POOL], query, count_total, settings.max_page_size,
                              settings.search_timeout_ms)
    if result.total is None and query.total == "auto" and query.cursor is None and not result.more_after:
        result.total = len(result.matches)  # the first page holds every match: the total is known
    issues = _issues(query, result, catalog.pending_codes)
    issues += [Issue("information", "suppressed", note) for note in (*access.left_out, *filter(None, [left_out]))]
    entries = [outcome_entry(issues)] if issues else []
    entries += [_entry(base, found, "match", query) for found in result.matches]
    entries += [_entry(base, found, "include", query) for found in result.included]
    links = _links(base, query, result)
    total = None if query.total == "none" and not query.summary_count else result.total
    return bundle("searchset", entries, links, total)


def _issues(query: SearchQuery, result: SearchResult, pending_codes: Callable[[str], frozenset[str]]) -> list[Issue]:
    issues = [Issue("warning", "not-supported", message) for message in query.ignored]
    pending = sorted(f"{res_type}:{code}" for res_type, code in query.used if code in pending_codes(res_type))
    if pending:
        issues.append(Issue("warning", "incomplete", f"Search parameters {', '.join(pending)} are not yet fully "
                            "indexed: the results may be incomplete until a reindex completes"))
    if result.iteration_cut:
        issues.append(Issue("warning", "incomplete", f"_include:iterate and _revinclude:iterate were followed for "
                            f"{MAX_ITERATE_ROUNDS} rounds beyond the matches' own includes; resources further away "
                            "are not included"))
    if result.included_truncated:
        issues.append(Issue("warning", "too-costly", f"Only the first {len(result.included)} included resources "
                            "are returned; use a smaller _count to get them all"))
    return issues


def _entry(base: str, found: Found, mode: str, query: SearchQuery) -> dict[str, Any]:
    resource: Any = orjson.Fragment(found.body)
    if subsets(query.summary, query.elements):
        resource = subset(exact_json.loads(found.body), query.summary, query.elements)
    return search_entry(f"{base}/{found.res_type}/{found.fhir_id}", resource, mode)


def _links(base: str, query: SearchQuery, result: SearchResult) -> dict[str, str]:
    url = base if query.system else f"{base}/{query.resource_type}"
    own = query.cursor
    links = {"self": _page_url(url, query, encode_cursor(own.direction, own.values, own.res_id) if own else None)}
    matches = result.matches
    if not matches:
        return links
    first, last = matches[0], matches[-1]
    backward = query.cursor is not None and query.cursor.direction == BACKWARD
    if result.more_after or backward:
        links["next"] = _page_url(url, query, encode_cursor(FORWARD, last.sort_values, last.res_id))
    if result.more_before or (query.cursor is not None and not backward):
        links["previous"] = _page_url(url, query, encode_cursor(BACKWARD, first.sort_values, first.res_id))
    return links


def _page_url(url: str, query: SearchQuery, cursor: str | None) -> str:
    parameters = [*query.link_parameters, *((("_cursor", cursor),) if cursor else ())]
    return f"{url}?{urlencode(parameters)}" if parameters else url
