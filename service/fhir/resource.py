"""Checks a resource body must pass before it is stored, and the server-maintained meta."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import orjson

from service.fhir import exact_json
from service.fhir.errors import FhirError, invalid, not_found
from service.fhir.instant import format_instant
from service.fhir.integers import MAX_INTEGER, parse_natural
from service.fhir.outcome import Issue
from service.fhir.resource_types import RESOURCE_TYPES
from service.fhir.validation import resource_issues

_ID_PATTERN = re.compile(r"[A-Za-z0-9\-.]{1,64}")
# Deeper JSON is refused before it is parsed: R4 resources nest a few levels (extensions of extensions,
# questionnaire items in items: a few dozen at the very most), and the JSON encoder stops at 255.
MAX_DEPTH = 100
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Submitted:
    """A resource as a client sent it: `values` as orjson reads it (checked, indexed) and `exact`, the
    same content with its numbers as written (stored), which is `values` itself when orjson keeps them."""

    values: dict[str, Any]
    exact: dict[str, Any]

    @classmethod
    def of(cls, resource: dict[str, Any]) -> Submitted:
        """A resource built in Python: its numbers are what orjson writes."""
        return cls(resource, resource)

    def stamped(self, fhir_id: str, version: int, last_updated: datetime) -> tuple[dict[str, Any], bytes]:
        """The stamped values (to index) and the body to store and serve."""
        values = stamp(self.values, fhir_id, version, last_updated)
        exact = values if self.exact is self.values else stamp(self.exact, fhir_id, version, last_updated)
        return values, orjson.dumps(exact)


def check_type(res_type: str) -> str:
    if res_type not in RESOURCE_TYPES:
        raise not_found(f"Unknown resource type '{res_type}': not a FHIR R4 resource type")
    return res_type


def check_id(fhir_id: str) -> str:
    if not _ID_PATTERN.fullmatch(fhir_id):
        raise invalid(f"Invalid resource id '{fhir_id}': ids are 1-64 characters of A-Z, a-z, 0-9, '-' and '.'")
    return fhir_id


def parse_body(raw: bytes, source: str = "request body") -> dict[str, Any]:
    """Parse a body that must be one JSON object; `source` names it in the messages (the loader reads
    lines and files, not request bodies)."""
    return _json_object(_decode(raw, orjson.loads, source), source)


def parse_resource(raw: bytes, source: str = "request body") -> Submitted:
    """Parse a resource body (one JSON object) to store: its numbers are kept as written."""
    values, exact = _decode(raw, exact_json.parse, source)
    return Submitted(_json_object(values, source), exact)


def _decode(raw: bytes, loads: Callable[[bytes], T], source: str) -> T:
    if not raw.strip():
        raise invalid(f"The {source} is empty; a FHIR resource in JSON was expected")
    if exact_json.nested_deeper(raw, MAX_DEPTH):
        raise FhirError(400, f"The {source} nests JSON objects and arrays more than {MAX_DEPTH} levels deep, "
                             f"the most this server accepts", code="structure")
    try:
        return loads(raw)
    except orjson.JSONDecodeError as exc:
        raise invalid(f"Failed to parse the {source} as JSON: {exc}") from None


def _json_object(parsed: Any, source: str) -> dict[str, Any]:
    if not isinstance(parsed, dict):
        raise invalid(f"The {source} must be a JSON object holding a FHIR resource")
    return parsed


def check_resource(resource: dict[str, Any], expected_type: str) -> dict[str, Any]:
    """The body of a create or update: a valid R4 resource of the type in the URL. Every structural
    problem is an issue of the one 400 (service/fhir/validation.py)."""
    issues = resource_problems(resource, expected_type)
    if issues:
        raise FhirError(400, "; ".join(_located(issue) for issue in issues), code=issues[0].code, issues=issues)
    return resource


def resource_problems(resource: dict[str, Any], expected_type: str) -> list[Issue]:
    """What makes `resource` not a valid R4 resource of `expected_type`: its type, else its structure."""
    res_type = resource.get("resourceType")
    if not isinstance(res_type, str) or not res_type:
        return [Issue("error", "invalid", "The resource has no 'resourceType' element")]
    if res_type != expected_type:
        return [Issue("error", "invalid",
                      f"The resource type '{res_type}' does not match the type '{expected_type}' in the URL")]
    return resource_issues(resource)


def _located(issue: Issue) -> str:
    return f"{issue.expression}: {issue.diagnostics}" if issue.expression else issue.diagnostics


def check_update_id(resource: dict[str, Any], url_id: str) -> None:
    body_id = resource.get("id")
    if body_id is None:
        raise invalid(f"The resource has no 'id' element; an update (PUT) must carry the id '{url_id}' of the URL")
    if body_id != url_id:
        raise invalid(f"The resource id '{body_id}' does not match the id '{url_id}' in the URL")


def stamp(resource: dict[str, Any], fhir_id: str, version: int, last_updated: datetime) -> dict[str, Any]:
    """The resource with the server-maintained id and meta, as it is stored, indexed and served."""
    meta = dict(resource.get("meta") or {})
    meta["versionId"] = str(version)
    meta["lastUpdated"] = format_instant(last_updated)
    # id and meta lead the object, as FHIR servers conventionally serialise them.
    stamped = {"resourceType": resource["resourceType"], "id": fhir_id, "meta": meta}
    stamped.update((key, value) for key, value in resource.items() if key not in stamped)
    return stamped


def parse_version_tag(value: str) -> int:
    """The version of an `If-Match` ETag: `W/"3"`, `"3"` or `3`."""
    version = parse_natural(value.strip().removeprefix("W/").strip('"'), MAX_INTEGER)
    if version is None:
        raise FhirError(400, f"Invalid If-Match header {value[:40]!r}: expected an ETag such as W/\"3\"",
                        code="invalid")
    return version
