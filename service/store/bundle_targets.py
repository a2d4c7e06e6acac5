"""The first pass of a Bundle's writes (service/store/bundle.py): what each entry writes to.

Deletes are done here; a create gets a fresh id, or the match of its `ifNoneExist`; a conditional update or
a patch finds (and locks) its match. Each `fullUrl` then names its resource (`Type/id`). A conditional
create repeating the criteria of an earlier one (in any spelling) resolves to the same resource, as in HAPI.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import parse_qsl
from uuid import uuid4

import asyncpg

from service.db import Connection
from service.fhir.bundle_entries import located
from service.fhir.errors import FhirError, invalid
from service.fhir.outcome import Issue
from service.fhir.references import is_placeholder
from service.fhir.resource import Submitted
from service.search.conditional import Criteria
from service.store.conditional import Patcher, ambiguous, matches, patch_target, single_match
from service.store.resources import (
    SELECT_CURRENT_FOR_UPDATE,
    ResourceStore,
    Version,
    WriteResult,
    check_version,
    version_of,
)

# The current rows of the instances PUT entries name, locked in res_id order (as the loader and reindex take
# them, so Bundles updating the same resources wait for each other instead of deadlocking).
LOCK_INSTANCES = """
SELECT r.res_id, r.res_type, r.fhir_id, r.version, r.last_updated, r.deleted, r.body
FROM resource r JOIN unnest($1::text[], $2::text[]) AS k (res_type, fhir_id)
  ON r.res_type = k.res_type AND r.fhir_id = k.fhir_id
ORDER BY r.res_id
FOR UPDATE OF r"""
PLACEHOLDER = re.compile(r"urn:(?:uuid|oid):[^,|\s]+")  # in a search value
Reparse = Callable[[str, Sequence[tuple[str, str]]], Criteria]  # criteria again, once placeholders are replaced


@dataclass
class Write:
    """One entry that changes something, checked and authorised (service/http/bundle_plan.py)."""

    index: int
    full_url: str | None
    method: str  # POST, PUT, PATCH, DELETE
    res_type: str
    fhir_id: str | None = None
    criteria: Criteria | None = None  # ifNoneExist (POST), or the URL's search (PUT, PATCH, DELETE)
    resource: Submitted | None = None
    patcher: Patcher | None = None
    if_match: int | None = None
    references: Mapping[str, Criteria] = field(default_factory=dict)  # the resource's conditional references


@dataclass(frozen=True)
class EntryResult:
    status: int
    version: Version | None  # what the entry wrote (a deletion's version too) or found
    note: Issue


@dataclass
class Step:
    write: Write
    result: EntryResult | None = None  # set once the entry is done
    target: str | None = None  # the id the entry writes or resolved to
    current: asyncpg.Record | None = None  # the locked row an update or patch makes a new version of
    create: bool = False  # insert at a fresh id
    same_as: Step | None = None  # an earlier conditional create with the same criteria
    identities: list[str] = field(default_factory=list)  # `Type/id` of the resources it changes


@contextmanager
def entry_errors(write: Write) -> Iterator[None]:
    """Failures inside name the entry."""
    try:
        yield
    except FhirError as exc:
        raise located(write.index, write.full_url, exc) from None
    except (asyncpg.LockNotAvailableError, asyncpg.DeadlockDetectedError):
        # A Bundle locks many rows: another one locking some of them in another order may deadlock with it.
        raise located(write.index, write.full_url, FhirError(
            409, "The resource is being changed by another request; retry the request", code="conflict")) from None


def names_entry(criteria: Criteria | None, placeholders: frozenset[str]) -> bool:
    """Whether the criteria hold the placeholder of an entry (`subject=urn:uuid:...`)."""
    return criteria is not None and any(match.group(0) in placeholders for _, value in criteria_items(criteria)
                                        for match in PLACEHOLDER.finditer(value))


def criteria_items(criteria: Criteria) -> list[tuple[str, str]]:
    return parse_qsl(criteria.text, keep_blank_values=True)


class Targets:
    """Resolves the entries of one transaction, in processing order, on its connection."""

    def __init__(self, store: ResourceStore, conn: Connection, timeout_ms: int, delete_multiple: bool,
                 reparse: Reparse, placeholders: frozenset[str]) -> None:
        self.store, self.conn, self.timeout_ms = store, conn, timeout_ms
        self.delete_multiple, self.reparse, self.placeholders = delete_multiple, reparse, placeholders
        self.names: dict[str, str] = {}  # fullUrl (and its `Type/id`) -> the `Type/id` of the resource
        self.creates: dict[tuple[str, int], Step] = {}  # conditional creates by criteria
        # The criteria of conditional creates and updates -> the id they resolved to: a conditional reference
        # with the same criteria names that resource, even one this transaction creates (as in HAPI).
        self.resolved: dict[tuple[str, int], str] = {}
        self.instances: dict[tuple[str, str], asyncpg.Record] = {}  # the rows of `lock_instances`

    async def lock_instances(self, writes: Sequence[Write]) -> None:
        """Lock, in one statement, the existing resources that PUT entries name by id."""
        keys = [(write.res_type, write.fhir_id) for write in writes if write.method == "PUT" and write.fhir_id]
        if keys:
            rows = await self.conn.fetch(LOCK_INSTANCES, [key[0] for key in keys], [key[1] for key in keys])
            self.instances = {(row["res_type"], row["fhir_id"]): row for row in rows}

    async def resolve(self, write: Write) -> Step:
        step = Step(write)
        with entry_errors(write):
            criteria = self.substituted(write.criteria)
            if write.method == "DELETE":
                step.result = await self._delete(step, criteria)
            elif write.method == "POST":
                await self._resolve_create(step, criteria)
            elif write.method == "PUT":
                await self._resolve_update(step, criteria)
            else:
                step.current = await patch_target(self.conn, write.res_type, criteria or str(write.fhir_id),
                                                  write.if_match, self.timeout_ms)
                step.target = write.fhir_id if criteria is None else step.current["fhir_id"]
        if step.target is not None:
            self._name(write, step.target)
            if criteria is not None and write.method in ("POST", "PUT"):
                self.resolved[(write.res_type, criteria.lock_key)] = step.target
            if write.method != "POST" or step.create:
                step.identities.append(f"{write.res_type}/{step.target}")
        return step

    def substituted(self, criteria: Criteria | None) -> Criteria | None:
        """The criteria with each entry's placeholder replaced by the `Type/id` it resolved to (other values,
        such as an identifier system `urn:oid:...`, stay as they are)."""
        if criteria is None or not names_entry(criteria, self.placeholders):
            return criteria
        items = [(name, PLACEHOLDER.sub(self._named, value)) for name, value in criteria_items(criteria)]
        return self.reparse(criteria.query.resource_type, items)

    def _named(self, match: re.Match[str]) -> str:
        text = match.group(0)
        if text in self.names:
            return self.names[text]
        if text in self.placeholders:
            raise invalid(f"The criteria name {text}, the fullUrl of an entry processed after this one (or of one "
                          "that writes nothing)")
        return text

    def _name(self, write: Write, target: str) -> None:
        if write.full_url is None:
            return
        name = f"{write.res_type}/{target}"
        self.names[write.full_url] = name
        tail = write.full_url.rstrip("/").split("/")[-2:]
        if not is_placeholder(write.full_url) and len(tail) == 2 and tail[0] == write.res_type:
            self.names["/".join(tail)] = name  # `http://host/fhir/Patient/a` is also `Patient/a` in references

    async def _delete(self, step: Step, criteria: Criteria | None) -> EntryResult:
        write = step.write
        if criteria is None:
            current = await self.conn.fetchrow(SELECT_CURRENT_FOR_UPDATE, write.res_type, write.fhir_id)
            if current is None:  # nothing to delete: done, as HAPI answers (no 404 to fail a transaction)
                check_version(write.if_match, None, write.res_type, str(write.fhir_id))
            rows = [(str(write.fhir_id), current)] if current is not None else []
        else:
            found = await matches(self.conn, criteria, self.timeout_ms, None if self.delete_multiple else 2)
            if len(found) > 1 and not self.delete_multiple:
                raise ambiguous("delete", criteria)
            rows = [(row["fhir_id"], row) for row in found]
        results = [await self.store.delete_in(self.conn, row, write.res_type, fhir_id, write.if_match)
                   for fhir_id, row in rows]
        step.identities += [f"{write.res_type}/{fhir_id}" for fhir_id, _ in rows]
        return _deleted(write, criteria, results)

    async def _resolve_create(self, step: Step, criteria: Criteria | None) -> None:
        write = step.write
        if criteria is not None:
            if (first := self.creates.setdefault((write.res_type, criteria.lock_key), step)) is not step:
                step.same_as, step.target = first, first.target
                return
            found = await single_match(self.conn, criteria, self.timeout_ms, "create")
            if found is not None:
                step.target = found["fhir_id"]
                step.result = EntryResult(200, version_of(write.res_type, step.target, found), Issue(
                    "information", "informational", f"{write.res_type}/{step.target} matches ifNoneExist "
                    f"'{criteria.text}': it was returned and nothing was created"))
                return
        step.target, step.create = str(uuid4()), True

    async def _resolve_update(self, step: Step, criteria: Criteria | None) -> None:
        write = step.write
        assert write.resource is not None, "a PUT entry has a resource"
        body_id = write.resource.values.get("id")
        if criteria is None:
            assert write.fhir_id is not None, "a PUT names its resource or criteria"
            step.target, step.current = write.fhir_id, self.instances.get((write.res_type, write.fhir_id))
            check_version(write.if_match, step.current["version"] if step.current else None, write.res_type,
                          write.fhir_id)
            step.create = step.current is None  # a new id the client chose: created with the Bundle's creates
            return
        found = await single_match(self.conn, criteria, self.timeout_ms, "update")
        if found is not None:
            if body_id is not None and body_id != found["fhir_id"]:
                raise invalid(f"The resource id '{body_id}' is not the id '{found['fhir_id']}' of the "
                              f"{write.res_type} that matches '{criteria.text}'")
            check_version(write.if_match, found["version"], write.res_type, found["fhir_id"])
            step.target, step.current = found["fhir_id"], found
        elif body_id is not None:
            step.target = body_id  # created with the body's id, as `PUT [type]/[id]` would
        else:
            check_version(write.if_match, None, write.res_type, f"?{criteria.text}")
            step.target, step.create = str(uuid4()), True


def _deleted(write: Write, criteria: Criteria | None, results: list[WriteResult]) -> EntryResult:
    version = results[0].version if len(results) == 1 else None
    if not results:
        missing = f"{write.res_type}/{write.fhir_id} is not known" if criteria is None else (
            f"No {write.res_type} matches '{criteria.text}'")
        return EntryResult(204, None, Issue("warning", "not-found", f"{missing}: nothing was deleted"))
    if criteria is None:
        message = (f"Deleted {write.res_type}/{write.fhir_id}" if results[0].changed
                   else f"{write.res_type}/{write.fhir_id} was already deleted")
        return EntryResult(204, version, Issue("information", "informational", message))
    names = ", ".join(f"{write.res_type}/{result.version.fhir_id}" for result in results[:10])
    more = f" and {len(results) - 10} more" if len(results) > 10 else ""
    return EntryResult(204, version, Issue("information", "informational", f"Deleted {len(results)} resource(s) "
                                           f"matching '{criteria.text}': {names}{more}"))
