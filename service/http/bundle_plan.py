"""Each entry of a batch or transaction Bundle as the request it stands for: checked by the same functions
as that request alone (resource checks, criteria, patches), and allowed only with the privileges it would
need alone (service/http/privileges.py, and service/http/search_access.py for what a search reads).

A conditional reference in a resource (`Organization?identifier=x|1`) is a search of its type: it needs that
type's `.search`, as the criteria of a conditional interaction do. In a batch, entries are independent, so a
reference to another entry's placeholder is refused.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from typing import Any

import orjson
from aiohttp import web

from service.fhir.bundle_entries import Entry, located, parse_entry
from service.fhir.errors import FhirError, invalid
from service.fhir.references import conditional_reference, is_placeholder, references
from service.fhir.resource import check_id, check_resource, check_update_id, parse_version_tag
from service.http.conditional import authorized_criteria, search_context
from service.http.keys import CATALOG, PRINCIPAL
from service.http.negotiation import FHIR_JSON
from service.http.patch import patch_function, patcher
from service.http.privileges import refusal, rule_for
from service.http.search import lenient
from service.http.search_access import authorize_search
from service.search.conditional import Criteria, if_none_exist_items, parse_criteria
from service.search.query import parse_search
from service.store.bundle import Write
from service.store.conditional import Patcher


class Planner:
    """Plans the entries of one request with its token and one catalog snapshot."""

    def __init__(self, request: web.Request, batch: bool) -> None:
        catalog = request.app[CATALOG].current
        self.context = search_context(request, False, catalog)  # criteria are strict, as in single requests
        self.searches = search_context(request, lenient(request), catalog)
        self.privileges, self.user_type = request[PRINCIPAL].privileges, request[PRINCIPAL].user_type
        self.batch = batch

    def plan(self, index: int, values: Any, exact: Any) -> Write | Entry:
        """A write, or a GET entry (run after the writes); FhirError naming the entry when it cannot be done."""
        full_url = values.get("fullUrl") if isinstance(values, dict) else None
        try:
            entry = parse_entry(index, values, exact)
            self._authorize(entry)
            if entry.method == "GET":
                if entry.query is not None:
                    authorize_search(parse_search(entry.res_type, entry.query, self.searches), self.privileges)
                return entry
            return self._write(entry)
        except FhirError as exc:
            raise located(index, full_url if isinstance(full_url, str) else None, exc) from None

    def reparse(self, res_type: str, items: Sequence[tuple[str, str]]) -> Criteria:
        """Criteria again, with other values (their types and chains, so their privileges, are unchanged)."""
        return parse_criteria(res_type, items, self.context)

    def _authorize(self, entry: Entry) -> None:
        instance = f"/{entry.fhir_id}" if entry.fhir_id else ""
        history = f"/_history/{entry.version}" if entry.version else ""
        conditional_create = entry.method == "POST" and bool(entry.condition("ifNoneExist"))
        rule = rule_for(entry.method, f"/{entry.res_type}{instance}{history}", conditional_create)
        assert rule is not None, "every entry shape has a privilege rule"
        if reason := refusal(rule, self.privileges, self.user_type):
            raise FhirError(403, reason, code="forbidden")

    def _write(self, entry: Entry) -> Write:
        resource = entry.resource if entry.method in ("POST", "PUT") else None  # a DELETE's is ignored
        if resource is not None:
            self._check_body(entry, resource.values)
        patch = self._patcher(entry) if entry.method == "PATCH" else None
        if_match = entry.condition("ifMatch")
        return Write(entry.index, entry.full_url, entry.method, entry.res_type, entry.fhir_id, self._criteria(entry),
                     resource, patch, parse_version_tag(if_match) if if_match else None,
                     self._references(resource.values) if resource is not None else {})

    def _check_body(self, entry: Entry, values: dict[str, Any]) -> None:
        """The checks of `POST [type]`, `PUT [type]/[id]` and `PUT [type]?criteria` on the entry's resource (a PUT
        entry's resource may leave out its id)."""
        check_resource(values, entry.res_type)
        if entry.method == "PUT" and entry.fhir_id is not None and values.get("id") is not None:
            check_update_id(values, entry.fhir_id)  # without one, the URL's id is used, as HAPI does
        elif entry.method == "PUT" and (body_id := values.get("id")) is not None:
            if not isinstance(body_id, str):
                raise invalid("The element 'id' must be a string")
            check_id(body_id)

    def _criteria(self, entry: Entry) -> Criteria | None:
        if entry.method == "POST":
            header = entry.condition("ifNoneExist")
            items = if_none_exist_items(header, entry.res_type) if header else None
        else:
            items = list(entry.query) if entry.query is not None else None
        return None if items is None else authorized_criteria(self.context, self.privileges, entry.res_type, items)

    def _references(self, values: dict[str, Any]) -> dict[str, Criteria]:
        """The resource's conditional references, each parsed and allowed as a search of its type."""
        found: dict[str, Criteria] = {}
        for reference in references(values):
            if self.batch and is_placeholder(reference):
                raise invalid(f"The reference '{reference[:200]}' names another entry: the entries of a batch are "
                              "independent (use a transaction)")
            if reference in found or (conditional := conditional_reference(reference)) is None:
                continue
            res_type, items = conditional
            if (needed := f"{res_type}.search") not in self.privileges:
                raise FhirError(403, f"The privilege {needed} is required for the conditional reference "
                                f"'{reference[:200]}', a search of {res_type}", code="forbidden")
            found[reference] = authorized_criteria(self.context, self.privileges, res_type, items)
        return found

    def _patcher(self, entry: Entry) -> Patcher:
        """A FHIRPath Patch (Parameters) or a JSON Patch (Binary of `application/json-patch+json`), as HAPI takes
        them in a Bundle."""
        assert entry.resource is not None, "a PATCH entry has a resource"
        values = entry.resource.values
        if values.get("resourceType") != "Binary":
            return patcher(entry.res_type, patch_function(FHIR_JSON, orjson.dumps(entry.resource.exact)))
        content_type, data = values.get("contentType"), values.get("data")
        if not isinstance(content_type, str) or not isinstance(data, str):
            raise invalid("A PATCH entry's Binary needs contentType (application/json-patch+json) and data (base64)")
        try:
            raw = base64.b64decode(data, validate=True)
        except binascii.Error:
            raise invalid("The PATCH entry's Binary data is not base64") from None
        return patcher(entry.res_type, patch_function(content_type, raw))
