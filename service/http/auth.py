"""Authentication and privileges on every request under the FHIR base path.

Runs inside `request_context` and `fhir_errors` (refusals leave as OperationOutcomes) and before negotiation,
body checks and the handlers, so a refused request reads no body and changes nothing. It runs whether or not a
route matches: without a valid token, a client cannot tell which paths exist (all answer 401).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import structlog
from aiohttp import web

from service.fhir.errors import FhirError
from service.http.jwks import JwksCache
from service.http.keys import PRINCIPAL, SETTINGS, TOKEN_VERIFIER
from service.http.privileges import Rule, expand_role_map, refusal, rule_for
from service.http.tokens import KeysUnavailable, Principal, TokenRejected, TokenVerifier

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
log = structlog.get_logger(__name__)

OPEN_PATHS = frozenset({"/livez", "/readyz", "/healthz", "/metrics"})
REALM = "fhir"


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    """401 without a valid bearer token, 403 without the privilege the request's rule names."""
    path = below_base(request.path, request.app[SETTINGS].base_path)
    if path is None or request.path in OPEN_PATHS:
        return await handler(request)
    rule = rule_for(request.method, path, bool(request.headers.get("If-None-Exist", "").strip()))
    if rule is not None and rule.public:
        return await handler(request)
    principal = await _principal(request)
    request[PRINCIPAL] = principal
    structlog.contextvars.bind_contextvars(user_id=principal.user_id, user_type=principal.user_type)
    _authorize(request, rule, principal)
    return await handler(request)


def below_base(path: str, base: str) -> str | None:
    """`path` relative to the FHIR base path (`""` for the base itself), or None outside it."""
    if path == base:
        return ""
    return path[len(base):] if path.startswith(base + "/") else None


async def _principal(request: web.Request) -> Principal:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise FhirError(401, "Authentication required: send an OAuth2 bearer token (Authorization: Bearer ...)",
                        code="login", headers={"WWW-Authenticate": f'Bearer realm="{REALM}"'})
    try:
        return await request.app[TOKEN_VERIFIER].principal(token)
    except TokenRejected as exc:
        raise _invalid_token(str(exc)) from exc
    except KeysUnavailable as exc:
        raise FhirError(503, f"The token cannot be checked now: {exc}; retry later", code="transient",
                        headers={"Retry-After": "5"}) from exc


def _invalid_token(reason: str) -> FhirError:
    challenge = f'Bearer realm="{REALM}", error="invalid_token", error_description="{reason}"'
    return FhirError(401, f"Authentication failed: {reason}", code="login", headers={"WWW-Authenticate": challenge})


def _authorize(request: web.Request, rule: Rule | None, principal: Principal) -> None:
    if rule is None:
        if request.match_info.http_exception is not None:
            return  # no such route: the router answers 404 or 405
        raise FhirError(403, f"No privilege rule covers {request.method} {request.path}; the request is refused",
                        code="forbidden")
    if reason := refusal(rule, principal.privileges, principal.user_type):
        raise FhirError(403, reason, code="forbidden")


async def authentication_context(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: the token verifier, and in jwks mode the HTTP session it fetches the key sets with."""
    settings = app[SETTINGS]
    role_map = expand_role_map(settings.role_map)
    log.info("authentication", mode=settings.auth_mode, jwks_urls=settings.jwks_urls, issuers=settings.jwt_issuers,
             audience=settings.jwt_audience, mapped_roles=sorted(role_map))
    if settings.auth_mode != "jwks":
        app[TOKEN_VERIFIER] = TokenVerifier(settings, role_map, None)
        yield
        return
    timeout = aiohttp.ClientTimeout(total=settings.jwks_timeout_seconds)
    async with aiohttp.ClientSession(timeout=timeout, raise_for_status=False) as session:
        app[TOKEN_VERIFIER] = TokenVerifier(settings, role_map, JwksCache(session, settings))
        yield
