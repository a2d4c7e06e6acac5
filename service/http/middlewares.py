"""Middlewares: request context and access log, FHIR errors as OperationOutcome, negotiation."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable

import asyncpg
import structlog
from aiohttp import web

from service import SERVICE_NAME, __version__
from service.fhir.errors import FhirError
from service.fhir.outcome import Issue
from service.http.keys import METRICS, PRINCIPAL, REQUEST_ID, RESPONSE_TYPE, SETTINGS
from service.http.negotiation import JSON_TYPES, PATCH_TYPES, check_body_type, negotiate
from service.http.responses import outcome_response
from service.pools import PoolExhausted

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
log = structlog.get_logger("service.http")

COMMON_HEADERS = {
    "Cache-Control": "no-cache, no-store, max-age=0, must-revalidate",
    "Pragma": "no-cache",
    "Expires": "0",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "X-XSS-Protection": "0",
    "X-Powered-By": f"{SERVICE_NAME} {__version__} REST Server (FHIR Server; FHIR 4.0.1/R4)",
}
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_STATUS_CODES = {400: "invalid", 401: "login", 403: "forbidden", 404: "not-found", 405: "not-supported",
                 406: "not-supported", 409: "conflict", 410: "deleted", 412: "conflict", 413: "too-costly",
                 415: "not-supported"}
# The database cannot be reached: it is down or restarting, refuses connections, or cut the connection.
# OSError covers the failures to connect (refused, unreachable, unknown host).
DATABASE_UNAVAILABLE = (OSError, asyncpg.PostgresConnectionError, asyncpg.CannotConnectNowError,
                        asyncpg.AdminShutdownError, asyncpg.CrashShutdownError, asyncpg.TooManyConnectionsError)
# Seconds a client should wait before retrying: a busy pool frees up fast, a database takes longer to return.
RETRY_BUSY_SECONDS, RETRY_DATABASE_SECONDS = "1", "5"
# What the access log says of a request whose client went away before its answer (nginx's code for it).
CLIENT_GONE = 499
LOGGED_REASON = 1000  # characters of a refusal's diagnostics logged (an invalid body may have 100 issues)


def _trace_id(request: web.Request) -> str | None:
    """The B3 trace id, from `X-B3-TraceId` or the single `b3` header."""
    if trace := request.headers.get("X-B3-TraceId"):
        return trace
    if single := request.headers.get("b3"):
        return single.split("-")[0]
    return None


@web.middleware
async def request_context(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Outermost: binds request id and trace id for logs, writes the access log and metrics."""
    request_id = request.headers.get("X-Request-Id") or str(uuid.uuid4())
    request[REQUEST_ID] = request_id
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=request_id, trace_id=_trace_id(request))
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except asyncio.CancelledError:
        status = CLIENT_GONE  # aiohttp cancels the handler of a request whose client disconnected
        raise
    finally:
        elapsed = time.perf_counter() - started
        route = request.match_info.route.resource.canonical if request.match_info.route.resource else "unmatched"
        request.app[METRICS].observe_request(request.method, route, status, elapsed)
        principal = request.get(PRINCIPAL)
        log.info("access", method=request.method, path=request.path, status=status,
                 duration_ms=round(elapsed * 1000, 2), remote=request.remote,
                 user_id=principal.user_id if principal else None, user_type=principal.user_type if principal else None)


@web.middleware
async def fhir_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure leaves as an OperationOutcome with the right status."""
    try:
        return await handler(request)
    except FhirError as exc:
        log.info("request_refused", status=exc.status, reason=exc.diagnostics[:LOGGED_REASON])
        issues = exc.issues or (Issue(exc.severity, exc.code, exc.diagnostics),)
        return outcome_response(request, exc.status, *issues, headers=exc.headers)
    except web.RequestPayloadError as exc:  # e.g. `Content-Encoding: gzip` on a body that is not gzip
        reason = str(exc).replace("\n", " ").strip()
        return outcome_response(request, 400, Issue("error", "invalid", f"The request body cannot be read: {reason}"))
    except asyncpg.LockNotAvailableError:
        return outcome_response(request, 409, Issue(
            "error", "conflict", "The resource is being changed by another request; retry the request"))
    except PoolExhausted as exc:
        log.warning("pool_exhausted", method=request.method, path=request.path)
        return outcome_response(request, 503, Issue(
            "error", "throttled", f"The service is busy: {exc} (FHIR_POOL_ACQUIRE_TIMEOUT_MS); retry the request"),
            headers={"Retry-After": RETRY_BUSY_SECONDS})
    except asyncpg.QueryCanceledError:  # FHIR_STATEMENT_TIMEOUT_MS: the database gave up on the statement
        log.warning("statement_timeout", method=request.method, path=request.path)
        return outcome_response(request, 503, Issue(
            "error", "timeout", "The database did not answer in time; retry later, or narrow the request"))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        code = _STATUS_CODES.get(exc.status, "processing")
        issue = Issue("error", code, f"{exc.reason}: {request.method} {request.path}")
        return outcome_response(request, exc.status, issue, headers=headers)
    except Exception as exc:
        if lost := _lost_database(exc):
            return _database_unavailable(request, lost)
        log.exception("unhandled_error", method=request.method, path=request.path)
        return outcome_response(request, 500, Issue(
            "error", "exception", f"Internal server error; quote request id {request[REQUEST_ID]} when reporting it"))


def _lost_database(exc: BaseException | None) -> BaseException | None:
    """The error saying the database is unreachable, if `exc` is one or was raised while handling one (a
    transaction cannot roll back on the connection that was just cut)."""
    while exc is not None and not isinstance(exc, DATABASE_UNAVAILABLE):
        exc = exc.__context__
    return exc


def _database_unavailable(request: web.Request, exc: BaseException) -> web.StreamResponse:
    if request.transport is None:  # the client went away (its reset connection is an OSError too)
        return web.Response(status=CLIENT_GONE)
    log.warning("database_unavailable", method=request.method, path=request.path, error=type(exc).__name__,
                detail=str(exc))
    return outcome_response(request, 503, Issue("error", "no-store", "The database is unavailable; retry the "
                                                "request later"), headers={"Retry-After": RETRY_DATABASE_SECONDS})


@web.middleware
async def fhir_negotiation(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Inside the FHIR base path: pick the response media type and check request bodies."""
    if _is_fhir_path(request):
        request[RESPONSE_TYPE] = negotiate(request.headers.get("Accept"), request.query.get("_format"))
        if request.method in _BODY_METHODS and request.can_read_body:
            _check_request_body(request)
    return await handler(request)


def _is_fhir_path(request: web.Request) -> bool:
    base = request.app[SETTINGS].base_path
    return request.path == base or request.path.startswith(base + "/")


def _check_request_body(request: web.Request) -> None:
    limit = request.app[SETTINGS].max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise FhirError(413, f"The request body of {request.content_length} bytes exceeds the limit of {limit} bytes",
                        code="too-costly")
    if not request.path.endswith("/_search"):
        check_body_type(request.content_type, PATCH_TYPES if request.method == "PATCH" else JSON_TYPES)


async def add_common_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: headers every response carries, errors and probes included."""
    for name, value in COMMON_HEADERS.items():
        response.headers.setdefault(name, value)
    if REQUEST_ID in request:
        response.headers["X-Request-Id"] = request[REQUEST_ID]
