"""Conditional create, update and delete, and patch: every SQL statement of those interactions.

The match is the FHIR search of the criteria (service/search/sql.py's conditions), run inside the write's
own transaction, so what it finds and what is written are one consistent step. A search then a write is
racy on its own: two identical conditional creates would both find nothing and both insert. So each
request first takes a transaction-scoped advisory lock keyed on its criteria (`Criteria.lock_key`: the
same for the same search, on every replica) and holds it to its commit. The transaction is READ
COMMITTED, where each statement sees what was committed before it started: the search, run once the lock
is granted, sees the resource and index rows the previous holder committed. Different criteria take
different locks (`identifier=x` does not wait for `identifier=x&active=true`).

The matched rows are locked (`FOR UPDATE`) before they are updated, deleted or patched. Each statement
runs within FHIR_SEARCH_TIMEOUT_MS (503 beyond); row and advisory locks wait at most FHIR_LOCK_TIMEOUT_MS
(409 beyond).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from uuid import uuid4

import asyncpg

from service.db import Connection
from service.fhir.errors import FhirError, invalid, not_found
from service.fhir.resource import Submitted
from service.search.conditional import Criteria
from service.search.sql import match_conditions
from service.search.sql_filters import Parameters
from service.store.fulltext import require_on
from service.store.resources import (
    SELECT_CURRENT_FOR_UPDATE,
    ResourceStore,
    Version,
    WriteResult,
    check_version,
    version_of,
)

LOCK_CRITERIA = "SELECT pg_advisory_xact_lock($1)"
SELECT_STATEMENT_TIMEOUT = "SELECT current_setting('statement_timeout')"
SET_STATEMENT_TIMEOUT = "SELECT set_config('statement_timeout', $1, true)"
MATCH_COLUMNS = "r.res_id, r.fhir_id, r.version, r.last_updated, r.deleted, r.body"

Patcher = Callable[[bytes], Submitted]  # the current body -> the patched resource to store


async def conditional_create(store: ResourceStore, resource: Submitted, criteria: Criteria,
                             timeout_ms: int) -> WriteResult:
    """Create unless the criteria match; one match is returned as it is (`changed` False), several are 412."""
    res_type = resource.values["resourceType"]
    async with store.write_transaction() as conn:
        found = await single_match(conn, criteria, timeout_ms, "create")
        if found is not None:
            return WriteResult(version_of(res_type, found["fhir_id"], found), changed=False)
        written = await store.insert(conn, res_type, str(uuid4()), resource, "POST")
    assert written is not None, "a fresh UUID cannot collide"
    return await store.after_write(WriteResult(written, created=True))


async def conditional_update(store: ResourceStore, resource: Submitted, criteria: Criteria, if_match: int | None,
                             timeout_ms: int) -> WriteResult:
    """Update the one match (the body's id, if any, must be its id); none: create, with the body's id if it
    has one (an update of that id, as `PUT [type]/[id]`), else a new one; several: 412."""
    res_type, body_id = resource.values["resourceType"], resource.values.get("id")
    async with store.write_transaction() as conn:
        found = await single_match(conn, criteria, timeout_ms, "update")
        if found is not None:
            fhir_id = found["fhir_id"]
            if body_id is not None and body_id != fhir_id:
                raise invalid(f"The resource id '{body_id}' is not the id '{fhir_id}' of the {res_type} that "
                              f"matches '{criteria.text}'")
            check_version(if_match, found["version"], res_type, fhir_id)
            result = WriteResult(await store.new_version(conn, found, res_type, fhir_id, resource, "PUT"))
        elif body_id is not None:
            result = await store.update_in(conn, resource, body_id, if_match)
        else:
            check_version(if_match, None, res_type, f"?{criteria.text}")
            written = await store.insert(conn, res_type, str(uuid4()), resource, "PUT")
            assert written is not None, "a fresh UUID cannot collide"
            result = WriteResult(written, created=True)
    return await store.after_write(result)


async def conditional_delete(store: ResourceStore, criteria: Criteria, if_match: int | None, multiple: bool,
                             timeout_ms: int) -> list[WriteResult]:
    """Delete every match (several are 412 unless `multiple`); an empty list when nothing matches."""
    res_type = criteria.query.resource_type
    async with store.write_transaction() as conn:
        rows = await matches(conn, criteria, timeout_ms, None if multiple else 2)
        if len(rows) > 1 and not multiple:
            raise ambiguous("delete", criteria)
        results = [await store.delete_in(conn, row, res_type, row["fhir_id"], if_match) for row in rows]
    if results:
        await store.after_write(results[0])  # one catalog refresh covers every deleted SearchParameter
    return results


async def patch(store: ResourceStore, res_type: str, target: str | Criteria, if_match: int | None,
                patcher: Patcher, timeout_ms: int) -> WriteResult:
    """A new version of the resource `target` (an id, or criteria with exactly one match) made by `patcher`
    from its current body. 404 when there is none, 410 when it is deleted, 412 on several matches."""
    async with store.write_transaction() as conn:
        current = await patch_target(conn, res_type, target, if_match, timeout_ms)
        fhir_id = target if isinstance(target, str) else current["fhir_id"]
        written = await patched_version(store, conn, current, res_type, fhir_id, patcher)
    return await store.after_write(WriteResult(written))


async def patch_target(conn: Connection, res_type: str, target: str | Criteria, if_match: int | None,
                       timeout_ms: int) -> asyncpg.Record:
    """The locked current row a patch applies to (see `patch`)."""
    if isinstance(target, str):
        current, fhir_id = await conn.fetchrow(SELECT_CURRENT_FOR_UPDATE, res_type, target), target
    else:
        current = await single_match(conn, target, timeout_ms, "patch")
        fhir_id = current["fhir_id"] if current is not None else ""
    if current is None:
        raise not_found(f"No {res_type} matches '{target.text}'" if isinstance(target, Criteria)
                        else f"Resource {res_type}/{target} is not known")
    if current["deleted"]:
        raise FhirError(410, f"Resource {res_type}/{fhir_id} was deleted (version {current['version']})",
                        code="deleted")
    check_version(if_match, current["version"], res_type, fhir_id)
    return current


async def patched_version(store: ResourceStore, conn: Connection, current: asyncpg.Record, res_type: str,
                          fhir_id: str, patcher: Patcher) -> Version:
    """The new version `patcher` makes of the locked row `current`. A patched resource the write refuses as
    invalid (400) is a 422: the request was well formed, its result is not."""
    patched = patcher(current["body"])
    try:
        return await store.new_version(conn, current, res_type, fhir_id, patched, "PUT")
    except FhirError as exc:
        if exc.status != 400:
            raise
        raise FhirError(422, f"The patched resource is not valid: {exc.diagnostics}", code="processing") from None


async def single_match(conn: Connection, criteria: Criteria, timeout_ms: int, action: str) -> asyncpg.Record | None:
    rows = await matches(conn, criteria, timeout_ms, 2)
    if len(rows) > 1:
        raise ambiguous(action, criteria)
    return rows[0] if rows else None


async def matches(conn: Connection, criteria: Criteria, timeout_ms: int,
                  limit: int | None) -> Sequence[asyncpg.Record]:
    """The current rows the criteria match (at most `limit`), locked, after the criteria's advisory lock. The
    lock and the search run within `timeout_ms`; the writes that follow, as any write, without it."""
    previous = await conn.fetchval(SELECT_STATEMENT_TIMEOUT)
    await conn.execute(SET_STATEMENT_TIMEOUT, f"{timeout_ms}ms")  # local to the transaction
    params = Parameters()
    where = " AND ".join(match_conditions(criteria.query, params))
    limit_clause = f" LIMIT {params.add(limit)}" if limit is not None else ""
    try:
        await conn.execute(LOCK_CRITERIA, criteria.lock_key)
        if full_text := criteria.query.full_text_code():
            await require_on(conn, full_text, hold=True)
        rows = await conn.fetch(f"SELECT {MATCH_COLUMNS} FROM resource r WHERE {where} ORDER BY r.res_id"
                                f"{limit_clause} FOR UPDATE OF r", *params.values)
    except asyncpg.QueryCanceledError:
        raise FhirError(503, f"The search of the conditional request was cancelled after {timeout_ms} ms "
                        "(FHIR_SEARCH_TIMEOUT_MS): use more selective parameters", code="timeout") from None
    await conn.execute(SET_STATEMENT_TIMEOUT, previous)
    return rows


def ambiguous(action: str, criteria: Criteria) -> FhirError:
    return FhirError(412, f"Failed to {action} {criteria.query.resource_type}: the search '{criteria.text}' matches "
                     "more than one resource; use more selective criteria", code="multiple-matches")
