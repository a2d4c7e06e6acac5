"""`POST [base]/$reindex`, and `GET`/`DELETE [base]/$hapi.fhir.reindex-status?_jobId=` (HAPI 8.6.5 wire
contract; see the design brief, section 2); `POST` on the status URL pauses, resumes or throttles (ours)."""

from __future__ import annotations

import time
from datetime import timedelta
from uuid import UUID

from aiohttp import web

from service.fhir.errors import invalid, not_found
from service.fhir.parameters import parse_dryrun_codes, parse_reindex_request
from service.fhir.resource import check_id, check_type, parse_body
from service.http.keys import CATALOG, POOL, PRINCIPAL, STORE
from service.http.responses import fhir_response
from service.http.urls import base_url
from service.jobs.control import control_job, parse_control
from service.jobs.filters import parse_filters
from service.jobs.instance_report import instance_reindex_parameters
from service.jobs.repository import JobProgress, job_progress, request_cancel
from service.jobs.start import ReindexPlan, start_reindex
from service.jobs.status import (
    accepted_response,
    already_running_response,
    cancel_ended_response,
    cancel_requested_response,
    control_response,
    job_status,
    status_response,
)

STATUS_OPERATION = "$hapi.fhir.reindex-status"
ENDED_STATES = frozenset({"completed", "failed", "cancelled"})


async def start(request: web.Request) -> web.Response:
    reindex = parse_reindex_request(parse_body(await request.read()))
    catalogs, base = request.app[CATALOG], base_url(request)
    filters = parse_filters(catalogs.registry, base, reindex.searches)
    plan = ReindexPlan.for_request(reindex, filters, base)
    principal, pool = request[PRINCIPAL], request.app[POOL]
    started = await start_reindex(pool, plan, catalogs.current.generation, principal.user_id,
                                  principal.user_type, throttle=reindex.throttle or None)
    respond = already_running_response if started.already_running else accepted_response
    status, body, headers = respond(_poll_url(request, started.job_id), _prefers_async(request))
    return fhir_response(request, status, body, headers)


async def status(request: web.Request) -> web.StreamResponse:
    job_id = _job_id(request)
    progress = await _progress(request, job_id)
    if request.query.get("_return") == "report" and progress.state in ENDED_STATES:
        return web.Response(text=progress.report or progress.error or "", content_type="text/plain")
    code, body, headers = status_response(job_status(progress), _poll_url(request, job_id))
    return fhir_response(request, code, body, headers)


async def cancel(request: web.Request) -> web.Response:
    job_id = _job_id(request)
    progress = await _progress(request, job_id)
    if progress.state in ENDED_STATES:
        code, body, headers = cancel_ended_response(progress.state)
    else:
        async with request.app[POOL].acquire() as conn:
            await request_cancel(conn, job_id)
        code, body, headers = cancel_requested_response(_poll_url(request, job_id))
    return fhir_response(request, code, body, headers)


async def control(request: web.Request) -> web.Response:
    """`POST` on the status URL: `_action=pause|resume|throttle` (with `rate`), all in the URL as `_jobId` is."""
    job_id = _job_id(request)
    job_control = parse_control(request.query.items())
    if await request.read():
        raise invalid("This operation takes its parameters in the URL (_action, rate), not in a body")
    async with request.app[POOL].acquire() as conn:
        before = await control_job(conn, job_id, job_control)
    if before is None:
        raise not_found(f"Invalid/unknown job ID: {job_id}")
    code, body, headers = control_response(job_control, before, _poll_url(request, job_id))
    return fhir_response(request, code, body, headers)


def _job_id(request: web.Request) -> UUID:
    raw = request.query.get("_jobId")
    if not raw:
        raise invalid("The _jobId parameter is required")
    try:
        return UUID(raw)
    except ValueError:
        raise not_found(f"Invalid/unknown job ID: {raw}") from None


async def _progress(request: web.Request, job_id: UUID) -> JobProgress:
    progress = await job_progress(request.app[POOL], job_id)
    if progress is None:
        raise not_found(f"Invalid/unknown job ID: {job_id}")
    return progress


def _poll_url(request: web.Request, job_id: UUID) -> str:
    return f"{base_url(request)}/{STATUS_OPERATION}?_jobId={job_id}"


def _prefers_async(request: web.Request) -> bool:
    return any("respond-async" in value.lower() for value in request.headers.getall("Prefer", []))


async def instance_reindex(request: web.Request) -> web.Response:
    """`POST [base]/{type}/{id}/$reindex`: reindex one resource now; the Parameters say what changed."""
    return await _instance(request, dry_run=False, codes=())


async def instance_dryrun(request: web.Request) -> web.Response:
    """`GET|POST [base]/{type}/{id}/$reindex-dryrun[?code=...]`: the same extraction, nothing written."""
    body = parse_body(await request.read()) if request.can_read_body else None
    return await _instance(request, dry_run=True, codes=parse_dryrun_codes(request.query.getall("code", []), body))


async def _instance(request: web.Request, dry_run: bool, codes: tuple[str, ...]) -> web.Response:
    res_type, fhir_id = check_type(request.match_info["type"]), check_id(request.match_info["id"])
    started = time.perf_counter()
    result = await request.app[STORE].reindex(res_type, fhir_id, write=not dry_run)
    if result is None:
        raise not_found(f"Resource {res_type}/{fhir_id} is not known")
    old, new = result
    elapsed = timedelta(seconds=time.perf_counter() - started)
    parameters = request.app[CATALOG].registry.parameters(res_type)
    types = {parameter.definition.code: parameter.definition.type.capitalize() for parameter in parameters}
    return fhir_response(request, 200, instance_reindex_parameters(old, new, elapsed, dry_run, codes, types))
