"""The CapabilityStatement served at `/metadata`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from service import SERVICE_NAME, __version__
from service.fhir.instant import format_instant
from service.fhir.resource_types import RESOURCE_TYPES
from service.search.definitions import SearchParameter
from service.search.registry import CompiledParameter, Registry

_INTERACTIONS = ("read", "vread", "update", "patch", "delete", "history-instance", "history-type", "create",
                 "search-type")
_SYSTEM_INTERACTIONS = ("transaction", "batch", "history-system")


def capability_statement(base: str, started: datetime, registry: Registry,
                         conditional_delete: str = "single") -> dict[str, Any]:
    """The statement; each type lists the search parameters of `registry` (built-in and custom).
    `conditional_delete`: `single`, or `multiple` with FHIR_CONDITIONAL_DELETE_MULTIPLE."""
    referring = _referring(registry)
    resources = [
        {
            "type": res_type,
            "interaction": [{"code": code} for code in _INTERACTIONS],
            "versioning": "versioned-update",
            "readHistory": True,
            "updateCreate": True,
            "conditionalCreate": True,
            "conditionalRead": "full-support",
            "conditionalUpdate": True,
            "conditionalDelete": conditional_delete,
            "searchInclude": ["*", *(f"{res_type}:{p.definition.code}" for p in _references(registry, res_type))],
            **({"searchRevInclude": ["*", *referring[res_type]]} if res_type in referring else {}),
            "searchParam": [_search_param(p.definition) for p in _sorted(registry, res_type)],
        }
        for res_type in sorted(RESOURCE_TYPES)
    ]
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": format_instant(started),
        "publisher": SERVICE_NAME,
        "kind": "instance",
        "software": {"name": SERVICE_NAME, "version": __version__},
        "implementation": {"description": "FHIR R4 server with HAPI-compatible $reindex", "url": base},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "rest": [{"mode": "server", "resource": resources,
                  "interaction": [{"code": code} for code in _SYSTEM_INTERACTIONS]}],
    }


def _sorted(registry: Registry, res_type: str) -> list[CompiledParameter]:
    return sorted(registry.parameters(res_type), key=lambda parameter: parameter.definition.code)


def _references(registry: Registry, res_type: str) -> list[CompiledParameter]:
    return [p for p in _sorted(registry, res_type) if p.definition.type == "reference" and p.definition.indexed]


def _referring(registry: Registry) -> dict[str, list[str]]:
    """Target type -> the `Source:param` reference parameters that may point at it (for _revinclude)."""
    referring: dict[str, list[str]] = {}
    for source in sorted(RESOURCE_TYPES):
        for parameter in _references(registry, source):
            for target in parameter.definition.target:
                referring.setdefault(target, []).append(f"{source}:{parameter.definition.code}")
    return referring


def _search_param(definition: SearchParameter) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": definition.code, "type": definition.type}
    if definition.url:
        entry["definition"] = definition.url
    entry["documentation"] = _documentation(definition)
    return entry


def _documentation(definition: SearchParameter) -> str:
    if definition.type == "composite":
        return "Composite parameter: listed for completeness, not supported for search by this server"
    if not definition.indexed:
        return f"{definition.type.capitalize()} parameter without an indexed expression: not supported for search"
    targets = f" (refers to {', '.join(definition.target)})" if definition.target else ""
    return f"Searches the values of {definition.expression}{targets}"
