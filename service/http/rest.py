"""Instance interactions: create, read, vread, update, delete."""

from __future__ import annotations

from email.utils import format_datetime
from typing import Any

from aiohttp import web

from service.fhir import exact_json
from service.fhir.errors import FhirError, invalid, not_found
from service.fhir.integers import MAX_INTEGER, parse_natural
from service.fhir.outcome import Issue
from service.fhir.resource import (
    check_id,
    check_resource,
    check_type,
    check_update_id,
    parse_body,
    parse_resource,
    parse_version_tag,
)
from service.fhir.summary import parse_elements, parse_summary, subset, subsets
from service.fhir.validate_operation import validation_outcome
from service.http.keys import STORE
from service.http.responses import fhir_response, outcome_response
from service.http.urls import base_url
from service.store.resources import Version, WriteResult


def version_headers(version: Version) -> dict[str, str]:
    return {"ETag": f'W/"{version.version}"', "Last-Modified": format_datetime(version.last_updated, usegmt=True)}


def version_url(request: web.Request, version: Version) -> str:
    return f"{base_url(request)}/{version.res_type}/{version.fhir_id}/_history/{version.version}"


def resource_headers(request: web.Request, version: Version) -> dict[str, str]:
    """The headers of a reply that shows one version: HAPI names it in `Content-Location` too."""
    return {**version_headers(version), "Content-Location": version_url(request, version)}


def _target(request: web.Request) -> tuple[str, str]:
    return check_type(request.match_info["type"]), check_id(request.match_info["id"])


def if_match(request: web.Request) -> int | None:
    header = request.headers.get("If-Match")
    return None if header is None else parse_version_tag(header)


def current_or_error(version: Version | None, res_type: str, fhir_id: str) -> Version:
    if version is None:
        raise not_found(f"Resource {res_type}/{fhir_id} is not known")
    if version.deleted:
        raise FhirError(410, f"Resource {res_type}/{fhir_id} was deleted (version {version.version})",
                        code="deleted", headers=version_headers(version))
    return version


async def read(request: web.Request) -> web.Response:
    res_type, fhir_id = _target(request)
    version = current_or_error(await request.app[STORE].read(res_type, fhir_id), res_type, fhir_id)
    return fhir_response(request, 200, _shown(request, version.body), resource_headers(request, version))


async def vread(request: web.Request) -> web.Response:
    res_type, fhir_id = _target(request)
    vid = request.match_info["vid"]
    version = parse_natural(vid, MAX_INTEGER)
    if version is None:
        raise invalid(f"Invalid version id '{vid[:40]}': a positive integer up to {MAX_INTEGER} was expected")
    found = await request.app[STORE].vread(res_type, fhir_id, version)
    if found is None:
        raise not_found(f"Version {vid} of resource {res_type}/{fhir_id} is not known")
    body = current_or_error(found, res_type, fhir_id).body
    return fhir_response(request, 200, _shown(request, body), resource_headers(request, found))


def _shown(request: web.Request, body: bytes | None) -> dict[str, Any] | bytes | None:
    """The stored body, or the part of it `_summary` or `_elements` asks for (None: a deletion, not shown)."""
    summary = parse_summary(request.query.getall("_summary", [None])[-1])
    if summary == "count":
        raise invalid("_summary=count applies to searches, not to a read")
    elements = parse_elements(request.query.getall("_elements", []))
    if body is None or not subsets(summary, elements):
        return body
    return subset(exact_json.loads(body), summary, elements)


async def create(request: web.Request) -> web.Response:
    res_type = check_type(request.match_info["type"])
    resource = parse_resource(await request.read())
    check_resource(resource.values, res_type)
    return written(request, await request.app[STORE].create(resource))


async def update(request: web.Request) -> web.Response:
    res_type, fhir_id = _target(request)
    resource = parse_resource(await request.read())
    check_update_id(check_resource(resource.values, res_type), fhir_id)
    return written(request, await request.app[STORE].update(resource, fhir_id, if_match(request)))


async def validate(request: web.Request) -> web.Response:
    """`$validate`: 200 with the problems of the resource sent, nothing stored."""
    res_type = check_type(request.match_info["type"])
    return outcome_response(request, 200, *validation_outcome(parse_body(await request.read()), res_type))


async def delete(request: web.Request) -> web.Response:
    res_type, fhir_id = _target(request)
    result = await request.app[STORE].delete(res_type, fhir_id, if_match(request))
    if result is None:
        raise not_found(f"Resource {res_type}/{fhir_id} is not known")
    message = (f"Successfully deleted {res_type}/{fhir_id}" if result.changed
               else f"Resource {res_type}/{fhir_id} was already deleted")
    return outcome_response(request, 200, Issue("information", "informational", message),
                            headers=version_headers(result.version))


def written(request: web.Request, result: WriteResult) -> web.Response:
    """The reply to a create or update, shaped by `Prefer: return=`."""
    version = result.version
    headers = resource_headers(request, version)
    status = 201 if result.created else 200
    if result.created:
        headers["Location"] = headers["Content-Location"]
    prefer = prefer_return(request)
    if prefer == "minimal":
        return fhir_response(request, status, None, headers)
    if prefer == "OperationOutcome":
        verb = "created" if result.created else "updated"
        message = f"Successfully {verb} {version.res_type}/{version.fhir_id} at version {version.version}"
        return outcome_response(request, status, Issue("information", "informational", message), headers=headers)
    return fhir_response(request, status, version.body, headers)


def prefer_return(request: web.Request, default: str = "representation") -> str:
    for preference in request.headers.getall("Prefer", []):
        for part in preference.split(","):
            name, _, value = part.strip().partition("=")
            if name.strip().lower() == "return":
                return value.strip().strip('"')
    return default
