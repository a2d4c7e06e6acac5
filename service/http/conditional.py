"""Conditional interactions: create with `If-None-Exist`, `PUT` and `DELETE [type]?search`, and conditional
read (`If-None-Match`, `If-Modified-Since`) on read and vread.

The criteria are a search: they need `{type}.search` beside the write privilege (service/http/privileges.py),
and a chain into another type needs that type's `.read`, as in any search (service/http/search_access.py).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime

from aiohttp import web

from service.fhir.errors import invalid
from service.fhir.outcome import Issue
from service.fhir.resource import check_id, check_resource, check_type, parse_resource
from service.http import rest
from service.http.keys import CATALOG, PRINCIPAL, SETTINGS, STORE
from service.http.responses import fhir_response, outcome_response
from service.http.search_access import authorize_search
from service.http.urls import base_url
from service.search.catalog import Catalog
from service.search.conditional import Criteria, if_none_exist_items, parse_criteria
from service.search.terms import SearchContext
from service.store.conditional import conditional_create, conditional_delete, conditional_update
from service.store.resources import WriteResult

IF_NONE_EXIST = "If-None-Exist"
Handler = Callable[[web.Request], Awaitable[web.Response]]


def criteria(request: web.Request, res_type: str, items: Sequence[tuple[str, str]]) -> Criteria:
    """The request's criteria, parsed as a search of `res_type` and allowed for its token."""
    return authorized_criteria(search_context(request, False), request[PRINCIPAL].privileges, res_type, items)


def search_context(request: web.Request, lenient: bool, catalog: Catalog | None = None) -> SearchContext:
    """What parsing a search needs to know of this request, with `catalog` (by default the current one)."""
    settings, catalog = request.app[SETTINGS], catalog or request.app[CATALOG].current
    return SearchContext(catalog.registry, base_url(request), datetime.now(timezone.utc), lenient,
                         settings.default_page_size, settings.max_page_size, settings.max_search_terms,
                         settings.max_search_values)


def authorized_criteria(context: SearchContext, privileges: frozenset[str], res_type: str,
                        items: Sequence[tuple[str, str]]) -> Criteria:
    parsed = parse_criteria(res_type, items, context)
    authorize_search(parsed.query, privileges)
    return parsed


async def create(request: web.Request) -> web.Response:
    """`POST [type]`, conditional when `If-None-Exist` is given (a blank one is ignored, as in HAPI)."""
    header = request.headers.get(IF_NONE_EXIST, "").strip()
    if not header:
        return await rest.create(request)
    res_type = check_type(request.match_info["type"])
    resource = parse_resource(await request.read())
    check_resource(resource.values, res_type)
    found = criteria(request, res_type, if_none_exist_items(header, res_type))
    result = await conditional_create(request.app[STORE], resource, found, request.app[SETTINGS].search_timeout_ms)
    return rest.written(request, result) if result.created else _existing(request, result, found)


def _existing(request: web.Request, result: WriteResult, found: Criteria) -> web.Response:
    """The reply when `If-None-Exist` matched: 200 with the existing resource, as HAPI answers."""
    version = result.version
    headers = rest.resource_headers(request, version)
    headers["Location"] = headers["Content-Location"]
    prefer = rest.prefer_return(request)
    if prefer == "minimal":
        return fhir_response(request, 200, None, headers)
    if prefer == "OperationOutcome":
        message = (f"{version.res_type}/{version.fhir_id} matches If-None-Exist '{found.text}': it was returned "
                   "and nothing was created")
        return outcome_response(request, 200, Issue("information", "informational", message), headers=headers)
    return fhir_response(request, 200, version.body, headers)


async def update(request: web.Request) -> web.Response:
    """`PUT [type]?search`."""
    res_type = check_type(request.match_info["type"])
    resource = parse_resource(await request.read())
    body_id = check_resource(resource.values, res_type).get("id")
    if body_id is not None and not isinstance(body_id, str):
        raise invalid("The element 'id' must be a string")
    if body_id is not None:
        check_id(body_id)
    found = criteria(request, res_type, list(request.query.items()))
    settings = request.app[SETTINGS]
    result = await conditional_update(request.app[STORE], resource, found, rest.if_match(request),
                                      settings.search_timeout_ms)
    return rest.written(request, result)


async def delete(request: web.Request) -> web.Response:
    """`DELETE [type]?search`: 200 with an OperationOutcome, a warning when nothing matched (as HAPI)."""
    res_type = check_type(request.match_info["type"])
    found = criteria(request, res_type, list(request.query.items()))
    settings = request.app[SETTINGS]
    results = await conditional_delete(request.app[STORE], found, rest.if_match(request),
                                       settings.conditional_delete_multiple, settings.search_timeout_ms)
    if not results:
        message = f"No {res_type} matches '{found.text}': nothing was deleted"
        return outcome_response(request, 200, Issue("warning", "not-found", message))
    names = ", ".join(f"{res_type}/{result.version.fhir_id}" for result in results[:10])
    more = f" and {len(results) - 10} more" if len(results) > 10 else ""
    message = f"Successfully deleted {len(results)} resource(s) matching '{found.text}': {names}{more}"
    headers = rest.version_headers(results[0].version) if len(results) == 1 else None
    return outcome_response(request, 200, Issue("information", "informational", message), headers=headers)


def not_modified(handler: Handler) -> Handler:
    """A read handler that answers 304 (no body) when the client's copy is current: `If-None-Match` names the
    version's ETag (or `*`), or, without `If-None-Match`, the version was written before `If-Modified-Since`.

    `Last-Modified` has whole seconds and `lastUpdated` milliseconds, so a version is known to be older only
    when its `Last-Modified` second is before the date: sending back the `Last-Modified` of a read gets 200,
    as from HAPI (which compares the milliseconds), never a 304 for a version written later that second."""

    async def conditional_read(request: web.Request) -> web.Response:
        response = await handler(request)
        if response.status == 200 and unchanged(request.headers, response.headers):
            kept = {name: response.headers[name] for name in ("ETag", "Last-Modified")}
            return web.Response(status=304, headers=kept)
        return response

    return conditional_read


def unchanged(request: Mapping[str, str], response: Mapping[str, str]) -> bool:
    """Whether the conditional read headers of `request` say the client's copy is current."""
    if (if_none_match := request.get("If-None-Match")) is not None:
        current = _opaque(response["ETag"])
        return any(tag == "*" or _opaque(tag) == current for tag in if_none_match.split(","))
    since = _http_date(request.get("If-Modified-Since"))
    if since is None:
        return False
    last_modified = _http_date(response.get("Last-Modified"))
    return last_modified is not None and last_modified < since


def _opaque(tag: str) -> str:
    """The version an entity tag names: `W/"3"`, `"3"` and `3` compare equal (weak comparison)."""
    return tag.strip().removeprefix("W/").strip('"')


def _http_date(text: str | None) -> datetime | None:
    """An HTTP date; None for a missing or malformed one, which RFC 9110 says to ignore."""
    try:
        parsed = parsedate_to_datetime(text) if text else None
    except (TypeError, ValueError):
        return None
    return parsed.replace(tzinfo=parsed.tzinfo or timezone.utc) if parsed else None


read = not_modified(rest.read)
vread = not_modified(rest.vread)
