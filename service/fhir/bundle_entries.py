"""The entries of a batch or transaction Bundle (pure): what each asks for, checked as the single request
it stands for would be, and failures located by entry.

An entry names its request with `request.method` and a URL relative to the base: `Type` (POST, or a
search), `Type/id`, `Type/id/_history/vid` (GET), or `Type?criteria` (a conditional PUT, PATCH or DELETE).
A POST may leave out the URL: its resource's type is used, as HAPI does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from service.fhir.errors import FhirError, invalid
from service.fhir.integers import MAX_INTEGER, parse_natural
from service.fhir.references import is_placeholder
from service.fhir.resource import Submitted, check_id
from service.fhir.resource_types import RESOURCE_TYPES

BUNDLE_TYPES = ("batch", "transaction")
METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})
_CONDITIONS = ("ifMatch", "ifNoneMatch", "ifNoneExist", "ifModifiedSince")


@dataclass(frozen=True)
class Entry:
    index: int  # position in the request Bundle, from 0 (`Bundle.entry[index]`)
    full_url: str | None
    method: str
    res_type: str
    fhir_id: str | None = None
    version: int | None = None  # GET Type/id/_history/version
    query: tuple[tuple[str, str], ...] | None = None  # the URL's search parameters; None: no `?` in the URL
    resource: Submitted | None = None
    conditions: tuple[tuple[str, str], ...] = ()  # request.ifMatch, ifNoneMatch, ifNoneExist, ifModifiedSince

    @property
    def label(self) -> str:
        return entry_label(self.index, self.full_url)

    def condition(self, name: str) -> str | None:
        return dict(self.conditions).get(name)


def entry_label(index: int, full_url: str | None) -> str:
    return f"Bundle.entry[{index}]" + (f" ({full_url[:200]})" if full_url else "")


def located(index: int, full_url: str | None, error: FhirError) -> FhirError:
    """`error` naming the entry it happened in."""
    return FhirError(error.status, f"{entry_label(index, full_url)}: {error.diagnostics}", code=error.code,
                     severity=error.severity, headers=error.headers)


def bundle_entries(bundle: Submitted, max_entries: int) -> tuple[str, list[tuple[Any, Any]]]:
    """The Bundle's type and its entries, each as (values, exact) trees (see Submitted)."""
    values = bundle.values
    if values.get("resourceType") != "Bundle":
        raise invalid(f"POST to the base URL takes a Bundle of type batch or transaction, not a "
                      f"{str(values.get('resourceType'))[:64]!r} resource")
    bundle_type = values.get("type") or "transaction"  # HAPI takes a Bundle without a type as a transaction
    if bundle_type not in BUNDLE_TYPES:
        raise invalid(f"Unable to process a Bundle of type {str(bundle_type)[:64]!r}: POST to the base URL takes "
                      "type batch or transaction")
    entries, exact = values.get("entry", []), bundle.exact.get("entry", [])
    if not isinstance(entries, list):
        raise invalid("Bundle.entry must be a JSON array")
    if len(entries) > max_entries:
        raise FhirError(413, f"The Bundle has {len(entries)} entries, more than the {max_entries} this server takes "
                        "in one request (FHIR_MAX_BUNDLE_ENTRIES): split it", code="too-costly")
    return bundle_type, list(zip(entries, exact))


def parse_entry(index: int, values: Any, exact: Any) -> Entry:
    """One entry as the request it stands for; FhirError (not yet located) when it is malformed."""
    if not isinstance(values, dict):
        raise invalid("An entry must be a JSON object")
    full_url = _optional_string(values, "fullUrl")
    if full_url is not None and full_url.startswith("urn:") and not is_placeholder(full_url):
        raise invalid(f"Invalid placeholder {full_url[:200]!r} in fullUrl: use urn:uuid:[uuid] or urn:oid:[oid]")
    request = values.get("request")
    if not isinstance(request, dict):
        raise invalid("The entry has no request: request.method and request.url say what to do with it")
    method = request.get("method")
    if method not in METHODS:
        raise invalid(f"Invalid request.method {str(method)[:20]!r}: one of {', '.join(sorted(METHODS))} is expected")
    resource = _resource(values, exact)
    url = _optional_string(request, "url")
    res_type, fhir_id, version, query = _target(method, url, resource)
    if method in ("POST", "PUT", "PATCH") and resource is None:
        raise invalid(f"A {method} entry needs a resource")
    if method == "POST" and query is not None:
        raise invalid("A POST entry's URL is a resource type alone; conditions go in request.ifNoneExist")
    conditions = tuple((name, text) for name in _CONDITIONS if (text := _optional_string(request, name)))
    return Entry(index, full_url, method, res_type, fhir_id, version, query, resource, conditions)


def _optional_string(element: dict[str, Any], name: str) -> str | None:
    value = element.get(name)
    if value is not None and not isinstance(value, str):
        raise invalid(f"The element '{name}' must be a string")
    return value.strip() if value is not None else None


def _resource(values: dict[str, Any], exact: dict[str, Any]) -> Submitted | None:
    resource = values.get("resource")
    if resource is None:
        return None
    if not isinstance(resource, dict):
        raise invalid("The entry's resource must be a JSON object holding a FHIR resource")
    return Submitted(resource, exact["resource"])


def _target(method: str, url: str | None, resource: Submitted | None) -> tuple[str, str | None, int | None,
                                                                              tuple[tuple[str, str], ...] | None]:
    """(type, id, version, query) of the entry's URL."""
    if not url:
        if method == "POST" and resource is not None and isinstance(resource.values.get("resourceType"), str):
            return _type(resource.values["resourceType"], "POST", ""), None, None, None
        raise invalid(f"The {method} entry has no request.url")
    if "://" in url:
        raise invalid(f"Unable to perform {method}: the URL '{url[:200]}' must be relative to the base (Type/id)")
    path, question_mark, query_text = url.lstrip("/").partition("?")
    parts = path.split("/")
    res_type = _type(parts[0], method, url)
    query = tuple(parse_qsl(query_text, keep_blank_values=True)) if question_mark else None
    if len(parts) == 1 and (method in ("GET", "POST") or query is not None):
        return res_type, None, None, query  # a search, a create, or a conditional write
    if len(parts) == 2 and query is None and method != "POST":
        return res_type, check_id(parts[1]), None, None
    if method == "GET" and len(parts) == 4 and parts[2] == "_history" and query is None:
        version = parse_natural(parts[3], MAX_INTEGER)
        if version is None:
            raise invalid(f"Invalid version id '{parts[3][:40]}': a positive integer up to {MAX_INTEGER} was expected")
        return res_type, check_id(parts[1]), version, None
    raise invalid(f"Unable to perform {method} {url[:200]}: a Bundle entry may read, version-read or search (GET), "
                  "create (POST), or update, patch or delete an instance or a conditional match")


def _type(name: str, method: str, url: str) -> str:
    if name not in RESOURCE_TYPES:
        raise invalid(f"Unable to perform {method}: the URL '{url[:200]}' does not start with a FHIR R4 resource type")
    return name
