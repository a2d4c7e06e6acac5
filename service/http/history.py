"""History interactions at instance, type and system level."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlencode

import orjson
from aiohttp import web

from service.fhir.bundle import bundle
from service.fhir.errors import invalid, not_found
from service.fhir.instant import format_instant, parse_instant
from service.fhir.integers import MAX_BIGINT, parse_natural
from service.fhir.paging import parse_count
from service.fhir.resource import check_id, check_type
from service.http.keys import POOL, SETTINGS
from service.http.responses import fhir_response
from service.http.urls import base_url
from service.store.history import HistoryEntry, count_instance_versions, history_page

_EPOCH = datetime(1, 1, 1, tzinfo=timezone.utc)
_RESPONSE_STATUS = {"POST": "201 Created", "PUT": "200 OK", "DELETE": "204 No Content"}


def page_size(request: web.Request) -> int:
    settings = request.app[SETTINGS]
    # A history page holds at least one entry (`_count=0` asks search, not history, for a total only).
    return max(1, parse_count(request.query.get("_count"), settings.default_page_size, settings.max_page_size))


async def system_history(request: web.Request) -> web.Response:
    return await _history(request, None, None)


async def type_history(request: web.Request) -> web.Response:
    return await _history(request, check_type(request.match_info["type"]), None)


async def instance_history(request: web.Request) -> web.Response:
    return await _history(request, check_type(request.match_info["type"]), check_id(request.match_info["id"]))


async def _history(request: web.Request, res_type: str | None, fhir_id: str | None) -> web.Response:
    count = page_size(request)
    since = parse_instant(request.query["_since"], "_since") if "_since" in request.query else _EPOCH
    cursor = request.query.get("_cursor")
    before = None if cursor is None else parse_natural(cursor, MAX_BIGINT)
    if cursor is not None and before is None:
        raise invalid(f"Invalid _cursor '{cursor[:40]}': use the links of a previous page")
    pool = request.app[POOL]
    page = await history_page(pool, res_type, fhir_id, since, before, count)
    total = None
    if res_type is not None and fhir_id is not None:  # an instance's history (an id comes with its type)
        total = await count_instance_versions(pool, res_type, fhir_id, since)
        if total == 0:
            raise not_found(f"Resource {res_type}/{fhir_id} is not known")
    base = base_url(request)
    links = {"self": _page_url(request, base, cursor)}
    if len(page) == count:
        links["next"] = _page_url(request, base, str(page[-1].cursor))
    entries = [_entry(base, entry) for entry in page]
    return fhir_response(request, 200, bundle("history", entries, links, total))


def _page_url(request: web.Request, base: str, cursor: str | None) -> str:
    path = request.path[len(request.app[SETTINGS].base_path):]
    query = [(key, value) for key, value in request.query.items() if key != "_cursor"]
    if cursor is not None:
        query.append(("_cursor", cursor))
    return f"{base}{path}" + (f"?{urlencode(query)}" if query else "")


def _entry(base: str, entry: HistoryEntry) -> dict[str, Any]:
    version = entry.version
    url = f"{version.res_type}/{version.fhir_id}"
    result: dict[str, Any] = {"fullUrl": f"{base}/{url}"}
    if version.body is not None:
        result["resource"] = orjson.Fragment(version.body)
    result["request"] = {"method": entry.method, "url": version.res_type if entry.method == "POST" else url}
    result["response"] = {
        "status": _RESPONSE_STATUS[entry.method],
        "etag": f'W/"{version.version}"',
        "lastModified": format_instant(version.last_updated),
    }
    return result
