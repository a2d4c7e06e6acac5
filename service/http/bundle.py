"""`POST [base]` with a Bundle of type `transaction` or `batch`.

- transaction: every entry is planned and authorised first (service/http/bundle_plan.py); one that cannot be
  done fails the whole request with its status, naming the entry. The writes then run in one database
  transaction (service/store/bundle.py), all or nothing; the GET entries run after the commit, so they see
  its result (as in HAPI), and a read that fails (404, 410) answers in its entry.
- batch: each entry is its own transaction; one that fails gets its status and OperationOutcome in its
  response entry, and the others still commit. Plain creates and updates (POST without `ifNoneExist`, PUT of
  an id; no conditional reference) are written together, as a transaction's are; if that fails, each is
  written alone, so a failure stays with its entry. GET entries run after the writes, as in HAPI.

Each response entry has `response.status` (`201 Created`), and for a write `location` (`Type/id/_history/n`),
`etag` (the version, as HAPI writes it) and `lastModified`; with `Prefer: return=representation` the
resource too; an OperationOutcome (`response.outcome`) unless `Prefer: return=minimal`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg
import structlog
from aiohttp import web

from service.fhir.bundle import bundle
from service.fhir.bundle_entries import Entry, bundle_entries
from service.fhir.errors import FhirError
from service.fhir.resource import parse_resource
from service.http.bundle_plan import Planner
from service.http.bundle_responses import error_entry, read_entry, written_entry
from service.http.keys import SETTINGS, STORE
from service.http.responses import fhir_response
from service.http.rest import prefer_return
from service.http.urls import base_url
from service.store.bundle import EntryResult, Write, write_entries

log = structlog.get_logger(__name__)
NO_PREFERENCE = ""


async def post_bundle(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    bundle_type, entries = bundle_entries(parse_resource(await request.read()), settings.max_bundle_entries)
    planner = Planner(request, batch=bundle_type == "batch")
    process = _batch if bundle_type == "batch" else _transaction
    responses = await process(request, planner, entries)
    return fhir_response(request, 200, bundle(f"{bundle_type}-response", responses, {"self": base_url(request)}))


async def _transaction(request: web.Request, planner: Planner, entries: list[tuple[Any, Any]]) -> list[dict[str, Any]]:
    planned = [planner.plan(index, values, exact) for index, (values, exact) in enumerate(entries)]
    writes = [item for item in planned if isinstance(item, Write)]
    responses: dict[int, dict[str, Any]] = {}
    if writes:
        prefer = prefer_return(request, NO_PREFERENCE)
        results = await _write(request, planner, writes)
        responses.update((write.index, written_entry(result, prefer)) for write, result in zip(writes, results))
    for entry in planned:
        if isinstance(entry, Entry):
            responses[entry.index] = await read_entry(request, entry)
    return [responses[index] for index in range(len(planned))]


async def _batch(request: web.Request, planner: Planner, entries: list[tuple[Any, Any]]) -> list[dict[str, Any]]:
    responses: dict[int, dict[str, Any]] = {}
    planned: list[Write | Entry] = []
    for index, (values, exact) in enumerate(entries):
        try:
            planned.append(planner.plan(index, values, exact))
        except FhirError as exc:
            responses[index] = error_entry(exc)
    writes = [item for item in planned if isinstance(item, Write)]
    prefer = prefer_return(request, NO_PREFERENCE)
    together = [write for write in writes if not write.criteria and not write.references
                and (write.method == "POST" or (write.method == "PUT" and write.fhir_id))]
    if len(together) > 1 and (results := await _together(request, planner, together)):
        responses.update((write.index, written_entry(result, prefer)) for write, result in zip(together, results))
    for write in writes:
        if write.index not in responses:
            responses[write.index] = await _alone(request, planner, write, prefer)
    for entry in planned:
        if isinstance(entry, Entry):
            responses[entry.index] = await read_entry(request, entry)
    return [responses[index] for index in range(len(entries))]


async def _together(request: web.Request, planner: Planner, writes: Sequence[Write]) -> list[EntryResult]:
    """Plain creates and updates of a batch in one transaction; empty when that fails (each is then written
    alone)."""
    try:
        return await _write(request, planner, writes)
    except (FhirError, asyncpg.PostgresError) as exc:
        log.info("batch_creates_one_by_one", entries=len(writes), reason=str(exc)[:200])
        return []


async def _alone(request: web.Request, planner: Planner, write: Write, prefer: str) -> dict[str, Any]:
    try:
        [result] = await _write(request, planner, [write])
    except FhirError as exc:
        return error_entry(exc)
    return written_entry(result, prefer)


async def _write(request: web.Request, planner: Planner, writes: Sequence[Write]) -> list[EntryResult]:
    settings = request.app[SETTINGS]
    return await write_entries(request.app[STORE], writes, settings.search_timeout_ms,
                               settings.conditional_delete_multiple, planner.reparse)
