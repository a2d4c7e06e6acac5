"""`PATCH [type]/[id]` and `PATCH [type]?search`: JSON Patch (`application/json-patch+json`), FHIRPath
Patch (a `Parameters` body in a FHIR JSON media type) or, for any other object sent as `application/json`,
JSON Merge Patch (RFC 7386, what fhirpy sends).

The patch is applied, inside the write's transaction, to the stored body parsed with its numbers as text
(`exact_json`), so numbers it does not touch keep their spelling; the values tree that checks and indexing
read is derived from the result. The result is stored as an update would be: a new version, indexed,
`If-Match` honoured. A malformed patch is a 400 and one that cannot apply, or whose result is not a valid
resource, a 422; both name the failing operation (counted from 0).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from service.fhir import exact_json
from service.fhir.errors import FhirError, invalid
from service.fhir.fhirpath_patch import apply_fhirpath_patch
from service.fhir.json_patch import PatchError, apply_json_patch, apply_merge_patch, plain
from service.fhir.resource import Submitted, check_id, check_resource, check_type
from service.http import rest
from service.http.conditional import criteria
from service.http.keys import SETTINGS, STORE
from service.http.negotiation import JSON_PATCH
from service.search.conditional import Criteria
from service.store.conditional import Patcher
from service.store.conditional import patch as store_patch

Apply = Callable[[Any], Any]  # the current resource (exact tree) -> the patched one


async def patch_instance(request: web.Request) -> web.Response:
    res_type, fhir_id = check_type(request.match_info["type"]), check_id(request.match_info["id"])
    return await _patch(request, res_type, fhir_id)


async def patch_conditional(request: web.Request) -> web.Response:
    res_type = check_type(request.match_info["type"])
    return await _patch(request, res_type, criteria(request, res_type, list(request.query.items())))


async def _patch(request: web.Request, res_type: str, target: str | Criteria) -> web.Response:
    patch = patcher(res_type, patch_function(request.content_type, await request.read()))
    result = await store_patch(request.app[STORE], res_type, target, rest.if_match(request), patch,
                         request.app[SETTINGS].search_timeout_ms)
    return rest.written(request, result)


def patch_function(content_type: str, raw: bytes) -> Apply:
    """The patch of the request body, checked for its form before anything is read from the database."""
    if not raw.strip():
        raise invalid("The PATCH body is empty; a JSON Patch or a FHIRPath Patch Parameters resource was expected")
    try:
        values, exact = exact_json.parse(raw)
    except ValueError as exc:  # orjson.JSONDecodeError
        raise invalid(f"Failed to parse the PATCH body as JSON: {exc}") from None
    if content_type == JSON_PATCH:
        if not isinstance(exact, list):
            raise invalid("A JSON Patch document must be a JSON array of operations")
        return lambda resource: _reported(lambda: apply_json_patch(resource, exact))
    if content_type == "application/json" and isinstance(exact, dict) and values.get("resourceType") != "Parameters":
        # fhirpy's `save(fields=...)` sends the changed elements as a plain JSON object: a merge patch.
        return lambda resource: apply_merge_patch(resource, exact)
    if not isinstance(values, dict) or values.get("resourceType") != "Parameters":
        raise invalid(f"A FHIRPath Patch body must be a Parameters resource (send a JSON Patch as {JSON_PATCH})")

    def fhirpath_patch(resource: Any) -> Any:
        _reported(lambda: apply_fhirpath_patch(resource, values, exact))
        return resource
    return fhirpath_patch


def _reported(step: Callable[[], Any]) -> Any:
    try:
        return step()
    except PatchError as exc:
        if exc.malformed:
            raise invalid(f"Invalid patch: {exc}") from None
        raise FhirError(422, f"The patch cannot be applied: {exc}", code="processing") from None


def patcher(res_type: str, apply: Apply) -> Patcher:
    def patched(body: bytes) -> Submitted:
        current_values, current = exact_json.parse(body)
        result = apply(current)
        if not isinstance(result, dict):
            raise FhirError(422, "The patched document is not a JSON object", code="processing")
        values = plain(result)
        try:
            check_resource(values, res_type)
        except FhirError as exc:
            raise FhirError(422, f"The patched resource is not valid: {exc.diagnostics}", code="processing") from None
        if values.get("id") not in (None, current_values["id"]):
            raise FhirError(422, f"The patch changes the id of {res_type}/{current_values['id']}", code="processing")
        return Submitted(values, result)
    return patched
