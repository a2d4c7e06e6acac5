"""Type-level search: `GET [base]/{type}?...` and `POST [base]/{type}/_search` (form body) -> searchset Bundle."""

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
from service.http.conditional import search_context
from service.http.keys import CATALOG, POOL, PRINCIPAL, SETTINGS
from service.http.responses import fhir_response
from service.http.search_access import authorize_search
from service.search.cursor import BACKWARD, FORWARD, encode_cursor
from service.search.query import SearchQuery, parse_search
from service.store.search import Found, SearchResult, run_search

FORM = "application/x-www-form-urlencoded"
UTF8 = frozenset({"utf-8", "utf8"})
SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED",
             "display": "Resource encoded in summary mode"}
KEPT_ELEMENTS = ("resourceType", "id", "meta")


async def search_get(request: web.Request) -> web.Response:
    return await _search(request, check_type(request.match_info["type"]), list(request.query.items()))


async def search_post(request: web.Request) -> web.Response:
    res_type = check_type(request.match_info["type"])
    return await _search(request, res_type, [*request.query.items(), *await _form_items(request)])


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


async def _search(request: web.Request, res_type: str, items: list[tuple[str, str]]) -> web.Response:
    return fhir_response(request, 200, await searchset(request, res_type, items))


async def searchset(request: web.Request, res_type: str, items: list[tuple[str, str]]) -> dict[str, Any]:
    """The searchset Bundle of a search of `res_type` by this request's token (also a Bundle entry's GET)."""
    settings, catalog = request.app[SETTINGS], request.app[CATALOG].current  # one snapshot for the whole request
    context = search_context(request, lenient(request), catalog)
    base = context.base
    access = authorize_search(parse_search(res_type, items, context), request[PRINCIPAL].privileges)
    query = access.query
    count_total = query.total == "accurate"
    result = await run_search(request.app[POOL], query, count_total, settings.max_page_size,
                              settings.search_timeout_ms)
    if result.total is None and query.total == "auto" and query.cursor is None and not result.more_after:
        result.total = len(result.matches)  # the first page holds every match: the total is known
    issues = _issues(query, result, catalog.pending_codes)
    issues += [Issue("information", "suppressed", note) for note in access.left_out]
    entries = [outcome_entry(issues)] if issues else []
    entries += [_entry(base, found, "match", query.elements) for found in result.matches]
    entries += [_entry(base, found, "include", query.elements) for found in result.included]
    links = _links(base, query, result)
    total = None if query.total == "none" and not query.summary_count else result.total
    return bundle("searchset", entries, links, total)


def _issues(query: SearchQuery, result: SearchResult, pending_codes: Callable[[str], frozenset[str]]) -> list[Issue]:
    issues = [Issue("warning", "not-supported", message) for message in query.ignored]
    pending = sorted(f"{res_type}:{code}" for res_type, code in query.used if code in pending_codes(res_type))
    if pending:
        issues.append(Issue("warning", "incomplete", f"Search parameters {', '.join(pending)} are not yet fully "
                            "indexed: the results may be incomplete until a reindex completes"))
    if result.included_truncated:
        issues.append(Issue("warning", "too-costly", f"Only the first {len(result.included)} included resources "
                            "are returned; use a smaller _count to get them all"))
    return issues


def _entry(base: str, found: Found, mode: str, elements: tuple[str, ...]) -> dict[str, Any]:
    resource = _subset(found.body, elements) if elements else orjson.Fragment(found.body)
    return search_entry(f"{base}/{found.res_type}/{found.fhir_id}", resource, mode)


def _subset(body: bytes, elements: tuple[str, ...]) -> dict[str, Any]:
    """Only the listed top-level elements (and resourceType, id, meta), tagged SUBSETTED."""
    resource = exact_json.loads(body)
    kept = {name: value for name, value in resource.items() if name in KEPT_ELEMENTS or name in elements}
    meta = dict(kept.get("meta") or {})
    meta["tag"] = [*meta.get("tag", []), SUBSETTED]
    kept["meta"] = meta
    return kept


def _links(base: str, query: SearchQuery, result: SearchResult) -> dict[str, str]:
    url = f"{base}/{query.resource_type}"
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
