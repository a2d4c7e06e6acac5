"""`GET [base]/metadata`: the CapabilityStatement, built from this app's route table and current registry."""

from __future__ import annotations

from aiohttp import web

from service.fhir.capability import Server
from service.fhir.capability_routes import capabilities
from service.http.keys import CAPABILITY_STATEMENTS, CATALOG, LIFECYCLE, POOL, SETTINGS
from service.http.responses import fhir_response
from service.http.urls import base_url
from service.settings import Settings
from service.store.fulltext import FullText
from service.store.fulltext import state as fulltext_state

SECURITY = {
    "jwks": "OAuth2 bearer tokens (JWT) signed by the configured issuers' keys (JWKS); privileges from the "
            "token's realm roles ({Type}.read, {Type}.search, {Type}.write...), $reindex for the reindex operations",
    "hs256": "OAuth2 bearer tokens (JWT) signed with a shared HS256 secret; privileges from the token's realm roles",
    "unsigned": "Bearer tokens (JWT) accepted without a signature check (local and test runs only); privileges "
                "from the token's realm roles",
}


async def metadata(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    async with request.app[POOL].acquire() as conn:
        full_text = await fulltext_state(conn) is FullText.ON
    server = Server(base_url(request), request.app[LIFECYCLE].started, capabilities(_routes(request.app, settings)),
                    SECURITY[settings.auth_mode or "jwks"],
                    "multiple" if settings.conditional_delete_multiple else "single", full_text)
    return fhir_response(request, 200, request.app[CAPABILITY_STATEMENTS].get(server, request.app[CATALOG].registry))


def _routes(app: web.Application, settings: Settings) -> list[tuple[str, str]]:
    """(method, path below the base path) of every route of the FHIR API."""
    base = settings.base_path
    found = []
    for route in app.router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        if path == base or path.startswith(base + "/"):
            found.append((route.method, path[len(base):]))
    return found
