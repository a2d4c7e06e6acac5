"""The CapabilityStatement served at `/metadata`: exactly what the server does.

Interactions and operations come from the route table (service/fhir/capability_routes.py), search parameters
from the registry: every parameter a search accepts (built-in, composite and `near` included, custom ones as they
are added, and the full-text `_text` and `_content`), and none that a search refuses (such as `_query`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from service import SERVICE_NAME, __version__
from service.fhir.capability_routes import Capabilities, Operation
from service.fhir.instant import format_instant
from service.fhir.resource_types import RESOURCE_TYPES
from service.search.definitions import SearchParameter
from service.search.registry import CompiledParameter, Registry

SECURITY_SERVICES = "http://terminology.hl7.org/CodeSystem/restful-security-service"
PATCH_FORMATS = ["application/json-patch+json", "application/fhir+json"]


@dataclass(frozen=True, slots=True)
class Server:
    """What the statement says beside the registry: where, since when, what it does, and how it is secured."""

    base: str
    started: datetime
    capabilities: Capabilities
    security: str  # how tokens are checked, for rest.security.description
    conditional_delete: str = "single"  # or `multiple` with FHIR_CONDITIONAL_DELETE_MULTIPLE
    full_text: bool = True  # `_text` and `_content` are listed only while full-text search is on


class StatementCache:
    """The statements built so far, serialized, for the registry in force. Building one walks every parameter of
    every type (about 140 ms of CPU for 1.3 MB of JSON), which a client that reads `/metadata` on each connection
    (the HAPI client validates a server this way) must not cost every other request. A statement depends on the
    app's route table, start and settings, fixed for the cache's life, and on the base URL and full-text state,
    its key; a new registry (a SearchParameter change) empties it. Few keys are kept: the Host header chooses
    the base URL."""

    MAX_ENTRIES = 8

    def __init__(self) -> None:
        self._registry: Registry | None = None
        self._built: dict[tuple[str, bool], bytes] = {}

    def __len__(self) -> int:
        return len(self._built)

    def get(self, server: Server, registry: Registry) -> bytes:
        if registry is not self._registry:
            self._registry, self._built = registry, {}
        key = (server.base, server.full_text)
        statement = self._built.get(key)
        if statement is None:
            if len(self._built) >= self.MAX_ENTRIES:
                del self._built[next(iter(self._built))]
            statement = self._built[key] = orjson.dumps(capability_statement(server, registry))
        return statement


def capability_statement(server: Server, registry: Registry) -> dict[str, Any]:
    found = server.capabilities
    rest: dict[str, Any] = {
        "mode": "server",
        "security": {"cors": False, "service": [{"coding": [{"system": SECURITY_SERVICES, "code": "OAuth"}]}],
                     "description": server.security},
        "resource": [_resource(res_type, server, registry) for res_type in sorted(RESOURCE_TYPES)],
        "interaction": [{"code": code} for code in found.system_interactions],
    }
    if "search-system" in found.system_interactions:
        rest["searchParam"] = [_search_param(definition) for definition in _common(registry)
                               if server.full_text or not definition.full_text]
    system_operations = [op for op in found.operations if op.level == "system"]
    if system_operations:
        rest["operation"] = [_operation(op, server.base) for op in system_operations]
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": format_instant(server.started),
        "publisher": SERVICE_NAME,
        "kind": "instance",
        "software": {"name": SERVICE_NAME, "version": __version__},
        "implementation": {"description": "FHIR R4 server with HAPI-compatible $reindex", "url": server.base},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        **({"patchFormat": PATCH_FORMATS} if "patch" in found.type_interactions else {}),
        "rest": [rest],
    }


def _resource(res_type: str, server: Server, registry: Registry) -> dict[str, Any]:
    found, interactions = server.capabilities, server.capabilities.type_interactions
    operations = [op for op in found.operations if op.level != "system"]
    entry: dict[str, Any] = {
        "type": res_type,
        "interaction": [{"code": code} for code in interactions],
        "versioning": "versioned-update",
        "readHistory": "vread" in interactions,
        "updateCreate": "update" in interactions,
        "conditionalCreate": "create" in interactions,  # If-None-Exist is honoured by every create
        "conditionalRead": "full-support" if "read" in interactions else "not-supported",
        "conditionalUpdate": found.conditional_update,
        "conditionalDelete": server.conditional_delete if found.conditional_delete else "not-supported",
    }
    if "search-type" in interactions:
        referring = _referring(registry, res_type)
        entry["searchInclude"] = ["*", *(f"{res_type}:{p.definition.code}" for p in _references(registry, res_type))]
        entry |= {"searchRevInclude": ["*", *referring]} if referring else {}
        entry["searchParam"] = [_search_param(p.definition) for p in _searchable(registry, res_type)
                                if server.full_text or not p.definition.full_text]
    if operations:
        entry["operation"] = [_operation(op, server.base) for op in operations]
    return entry


def _searchable(registry: Registry, res_type: str) -> list[CompiledParameter]:
    """The parameters a search of the type accepts, by code."""
    parameters = (p for p in registry.parameters(res_type) if p.definition.searchable)
    return sorted(parameters, key=lambda parameter: parameter.definition.code)


def _references(registry: Registry, res_type: str) -> list[CompiledParameter]:
    return [p for p in _searchable(registry, res_type) if p.definition.type == "reference"]


def _referring(registry: Registry, target: str) -> list[str]:
    """The `Source:param` reference parameters that may point at `target` (for _revinclude)."""
    return [f"{source}:{p.definition.code}" for source in sorted(RESOURCE_TYPES) for p in _references(registry, source)
            if target in p.definition.target]


def _common(registry: Registry) -> list[SearchParameter]:
    """The parameters every type has, of one parameter type: what a search of all types accepts."""
    first, *others = sorted(RESOURCE_TYPES)
    return [p.definition for p in _searchable(registry, first)
            if all((other_p := registry.parameter(other, p.definition.code)) is not None
                   and other_p.definition.searchable and other_p.definition.type == p.definition.type
                   for other in others)]


def _operation(operation: Operation, base: str) -> dict[str, str]:
    return {"name": operation.name, "definition": operation.definition(base)}


def _search_param(definition: SearchParameter) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": definition.code, "type": definition.type}
    if definition.url:
        entry["definition"] = definition.url
    targets = f" (refers to {', '.join(definition.target)})" if definition.target else ""
    entry["documentation"] = f"Searches the values of {definition.expression}{targets}"
    return entry
