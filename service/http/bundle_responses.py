"""The response entries of a batch or transaction: a write's result, a failure, and the GET entries (read,
vread, search), which run with the same privileges and answers as the single requests.

A GET entry honours `request.ifNoneMatch` and `request.ifModifiedSince` as a conditional read does
(`304 Not Modified`, no resource).
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

import orjson
from aiohttp import web

from service.fhir.bundle_entries import Entry, located
from service.fhir.errors import FhirError, not_found
from service.fhir.instant import format_instant
from service.fhir.outcome import Issue, operation_outcome
from service.http.conditional import unchanged
from service.http.keys import STORE
from service.http.rest import current_or_error, version_headers
from service.http.search import searchset
from service.store.bundle import EntryResult
from service.store.resources import Version


def status_line(status: int) -> str:
    """`201 Created`: the status and its reason phrase, as `Bundle.entry.response.status` carries them."""
    return f"{status} {HTTPStatus(status).phrase}"


def written_entry(result: EntryResult, prefer: str) -> dict[str, Any]:
    """The response entry of a write; `prefer` is `Prefer: return=` (empty when not sent)."""
    response: dict[str, Any] = {"status": status_line(result.status)}
    entry: dict[str, Any] = {}
    if (version := result.version) is not None:
        response["location"] = f"{version.res_type}/{version.fhir_id}/_history/{version.version}"
        response["etag"] = str(version.version)
        response["lastModified"] = format_instant(version.last_updated)
        if prefer == "representation" and version.body is not None:
            entry["resource"] = orjson.Fragment(version.body)
    if prefer != "minimal":
        response["outcome"] = operation_outcome(result.note)
    entry["response"] = response
    return entry


def error_entry(error: FhirError) -> dict[str, Any]:
    """The response entry of a batch entry that failed."""
    issue = Issue(error.severity, error.code, error.diagnostics)
    return {"response": {"status": status_line(error.status), "outcome": operation_outcome(issue)}}


async def read_entry(request: web.Request, entry: Entry) -> dict[str, Any]:
    """The response entry of a GET entry (allowed when it was planned)."""
    try:
        if entry.query is not None:
            return {"resource": await searchset(request, (entry.res_type,), list(entry.query)),
                    "response": {"status": status_line(200)}}
        version = await _version(request, entry)
    except FhirError as exc:
        return error_entry(located(entry.index, entry.full_url, exc))
    response = {"etag": str(version.version), "lastModified": format_instant(version.last_updated)}
    conditions = {name: value for name, key in (("If-None-Match", "ifNoneMatch"),
                                                ("If-Modified-Since", "ifModifiedSince"))
                  if (value := entry.condition(key)) is not None}
    if unchanged(conditions, version_headers(version)):
        return {"response": {"status": status_line(304), **response}}
    assert version.body is not None, "a current version has a body"
    return {"resource": orjson.Fragment(version.body), "response": {"status": status_line(200), **response}}


async def _version(request: web.Request, entry: Entry) -> Version:
    store, res_type, fhir_id = request.app[STORE], entry.res_type, entry.fhir_id
    assert fhir_id is not None, "a read names its resource"
    if entry.version is None:
        return current_or_error(await store.read(res_type, fhir_id), res_type, fhir_id)
    found = await store.vread(res_type, fhir_id, entry.version)
    if found is None:
        raise not_found(f"Version {entry.version} of resource {res_type}/{fhir_id} is not known")
    return current_or_error(found, res_type, fhir_id)
