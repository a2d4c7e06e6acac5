"""`GET [base]/metadata`: the CapabilityStatement."""

from __future__ import annotations

from aiohttp import web

from service.fhir.capability import capability_statement
from service.http.keys import CATALOG, LIFECYCLE, SETTINGS
from service.http.responses import fhir_response
from service.http.urls import base_url


async def metadata(request: web.Request) -> web.Response:
    conditional_delete = "multiple" if request.app[SETTINGS].conditional_delete_multiple else "single"
    statement = capability_statement(base_url(request), request.app[LIFECYCLE].started, request.app[CATALOG].registry,
                                     conditional_delete)
    return fhir_response(request, 200, statement)
