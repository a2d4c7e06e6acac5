"""The writes of a batch or transaction Bundle: all of them in one database transaction, all or nothing.

Entries run in the order the specification sets (DELETE, POST, PUT, PATCH; the Bundle's order within each),
in two passes, because a resource may refer to one created later in the Bundle (or to one that refers back):

1. Resolve (service/store/bundle_targets.py): what each entry writes to; deletes are done. Two writes on one
   resource are refused (400).
2. Write: in each resource, every reference to an entry's `fullUrl` (a `urn:uuid:`/`urn:oid:` placeholder, or
   a URL) is replaced by the `Type/id` it names, and each conditional reference (`Organization?identifier=x|1`)
   by its one match (none: 404, several: 412, as HAPI), or by the resource of a conditional create or update
   of the Bundle with the same criteria; then the resources are stored: creates and updates together, with
   one statement or COPY per table (the loader's writer, service/store/bulk.py), patches one by one, with
   the same checks, index rows, fingerprints and history as single requests.

Criteria run as the conditional interactions' do (service/store/conditional.py: advisory lock, row locks,
FHIR_SEARCH_TIMEOUT_MS). Criteria that hold an entry's placeholder are searched with the `Type/id` it resolved
to, after the entries without one. Once written, a conditional create or update that created is searched
again: when its criteria now match more than its own resource, the Bundle made a duplicate and is refused
(400). A failure names its entry (`Bundle.entry[i] (fullUrl)`), and the transaction rolls back.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import asyncpg

from service.fhir.bundle_entries import entry_label, located
from service.fhir.errors import FhirError, invalid, not_found
from service.fhir.instant import now_ms
from service.fhir.outcome import Issue
from service.fhir.references import is_placeholder, rewrite_references
from service.fhir.resource import Submitted
from service.search.conditional import Criteria
from service.store.bulk import prepare, write_prepared
from service.store.bundle_targets import (
    EntryResult,
    Reparse,
    Step,
    Targets,
    Write,
    entry_errors,
    names_entry,
)
from service.store.conditional import matches, patched_version
from service.store.resources import SEARCH_PARAMETER, ResourceStore, Version, WriteResult
from service.store.search_parameters import catalog_for_write

__all__ = ["EntryResult", "Reparse", "Write", "write_entries"]

ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 3}
Resolve = Callable[[str], str | None]


async def write_entries(store: ResourceStore, writes: Sequence[Write], timeout_ms: int, delete_multiple: bool,
                        reparse: Reparse) -> list[EntryResult]:
    """Every write in one transaction; the results in the order of `writes`."""
    _refuse_shared_full_urls(writes)
    placeholders = frozenset(write.full_url for write in writes if write.full_url and is_placeholder(write.full_url))
    async with store.write_transaction() as conn:
        transaction = _Transaction(store, conn, timeout_ms, delete_multiple, reparse, placeholders)
        await transaction.lock_instances(writes)
        ordered = sorted(writes, key=lambda write: (ORDER[write.method], names_entry(write.criteria, placeholders),
                                                    write.index))
        steps = [await transaction.resolve(write) for write in ordered]
        _refuse_overlaps(steps)
        references = await transaction.conditional_references(writes)
        await transaction.write(steps, references)
        await transaction.refuse_duplicates(steps)
    by_write = {id(step.write): step for step in steps}
    results = [_result(by_write[id(write)]) for write in writes]
    for result in results:
        if result.version is not None and result.version.res_type == SEARCH_PARAMETER:
            await store.after_write(WriteResult(result.version))  # one catalog refresh covers them all
            break
    return results


def _result(step: Step) -> EntryResult:
    assert step.result is not None, "every entry has a result once the writes are done"
    return step.result


def _refuse_shared_full_urls(writes: Sequence[Write]) -> None:
    seen: dict[str, Write] = {}
    for write in writes:
        if write.full_url and (first := seen.setdefault(write.full_url, write)) is not write:
            raise located(write.index, write.full_url, invalid(
                f"{entry_label(first.index, first.full_url)} has the same fullUrl: each entry needs its own"))


def _refuse_overlaps(steps: Sequence[Step]) -> None:
    seen: dict[str, Write] = {}
    for step in steps:
        for identity in step.identities:
            if (first := seen.setdefault(identity, step.write)) is not step.write:
                raise located(step.write.index, step.write.full_url, invalid(
                    f"{identity} is also changed by {entry_label(first.index, first.full_url)}: a transaction "
                    "changes each resource once"))


class _Transaction(Targets):
    """The second pass: references replaced, then the resources written."""

    async def conditional_references(self, writes: Sequence[Write]) -> dict[str, str]:
        """Each conditional reference of the resources -> the `Type/id` of its one match."""
        resolved: dict[str, str] = {}
        for write in writes:
            for text, criteria in write.references.items():
                if text not in resolved:
                    with entry_errors(write):
                        resolved[text] = await self._reference(text, criteria)
        return resolved

    async def _reference(self, text: str, criteria: Criteria) -> str:
        res_type = criteria.query.resource_type
        if (target := self.resolved.get((res_type, criteria.lock_key))) is not None:
            return f"{res_type}/{target}"
        rows = await matches(self.conn, criteria, self.timeout_ms, 2)
        if not rows:
            raise not_found(f"Invalid conditional reference '{text[:200]}': no {res_type} matches it")
        if len(rows) > 1:
            raise FhirError(412, f"Invalid conditional reference '{text[:200]}': several {res_type} resources "
                            "match it", code="multiple-matches")
        return f"{res_type}/{rows[0]['fhir_id']}"

    def _resolver(self, references: Mapping[str, str]) -> Resolve:
        def resolve(reference: str) -> str | None:
            if (name := self.names.get(reference)) is not None:
                return name
            if is_placeholder(reference):
                raise invalid(f"The reference '{reference[:200]}' names no entry of this Bundle that creates or "
                              "updates a resource (no such fullUrl)")
            return references.get(reference)
        return resolve

    async def write(self, steps: Sequence[Step], references: Mapping[str, str]) -> None:
        resolve = self._resolver(references)
        together = [step for step in steps if step.create or (step.write.method == "PUT" and step.current is not None)]
        await self._write_together(together, resolve)
        for step in steps:
            with entry_errors(step.write):
                if step.write.method == "PUT" and step.result is None:
                    step.result = await self._write_update(step, resolve)
                elif step.write.method == "PATCH":
                    step.result = await self._write_patch(step, resolve)
        for step in steps:
            if step.same_as is not None:
                step.result = _same_as(step, step.same_as)

    async def _write_together(self, steps: Sequence[Step], resolve: Resolve) -> None:
        """Creates, and updates of rows already locked, written with one statement or COPY per table."""
        if not steps:
            return
        last_updated, prepared = now_ms(), []
        logs_change = any(step.write.res_type == SEARCH_PARAMETER for step in steps)
        catalog = await catalog_for_write(self.conn, self.store.catalogs, logs_change)
        for step in steps:
            write, current = step.write, step.current
            assert write.resource is not None and step.target is not None, "a create or update has a resource and an id"
            with entry_errors(write):
                rewrite_references(write.resource, resolve)
                version = 1 if current is None else current["version"] + 1
                prepared.append(prepare(write.resource, step.target, version, last_updated, catalog, write.method,
                                        None if current is None else current["res_id"]))
        try:
            await write_prepared(self.conn, prepared, last_updated, catalog.generation)
        except asyncpg.UniqueViolationError:  # an id a PUT chose, created by another request since it was looked up
            raise FhirError(409, "A resource this Bundle creates was created by another request meanwhile; retry the "
                            "request", code="conflict") from None
        for step, item in zip(steps, prepared):
            created = step.current is None or step.current["deleted"]  # reviving a deleted resource creates it
            version = Version(item.res_type, item.fhir_id, item.version, last_updated, False, item.body)
            verb = "Created" if created else "Updated"
            step.result = EntryResult(201 if created else 200, version,
                                      _note(f"{verb} {item.res_type}/{item.fhir_id} at version {item.version}"))

    async def _write_update(self, step: Step, resolve: Resolve) -> EntryResult:
        """A conditional update that matched nothing, with the id of its body: a PUT of that id."""
        write = step.write
        assert write.resource is not None and step.target is not None, "an update has a resource and an id"
        rewrite_references(write.resource, resolve)
        result = await self.store.update_in(self.conn, write.resource, step.target, write.if_match)
        version = result.version
        verb = "Created" if result.created else "Updated"
        return EntryResult(201 if result.created else 200, version,
                           _note(f"{verb} {version.res_type}/{version.fhir_id} at version {version.version}"))

    async def _write_patch(self, step: Step, resolve: Resolve) -> EntryResult:
        patcher, current = step.write.patcher, step.current
        assert patcher is not None and current is not None, "a patch has a patcher and a locked row"

        def patched(body: bytes) -> Submitted:
            resource = patcher(body)
            rewrite_references(resource, resolve)
            return resource

        assert step.target is not None, "a patch resolved its target"
        version = await patched_version(self.store, self.conn, current, step.write.res_type, step.target, patched)
        return EntryResult(200, version,
                           _note(f"Patched {version.res_type}/{version.fhir_id} to version {version.version}"))

    async def refuse_duplicates(self, steps: Sequence[Step]) -> None:
        for step in steps:
            if step.create and step.write.criteria is not None:
                with entry_errors(step.write):
                    criteria = self.substituted(step.write.criteria)
                    assert criteria is not None
                    if len(await matches(self.conn, criteria, self.timeout_ms, 2)) > 1:
                        raise invalid(f"This Bundle would make several {step.write.res_type} resources match "
                                      f"'{criteria.text}': does it hold duplicates?")


def _note(message: str) -> Issue:
    return Issue("information", "informational", message)


def _same_as(step: Step, first: Step) -> EntryResult:
    done = _result(first)
    assert done.version is not None and step.write.criteria is not None, "a conditional create has a version"
    version = done.version
    return EntryResult(200, version, _note(
        f"{version.res_type}/{version.fhir_id} matches ifNoneExist '{step.write.criteria.text}' as "
        f"{entry_label(first.write.index, first.write.full_url)} does: nothing more was created"))
