"""What the server does, read off its routes (pure): the REST interactions and operations a CapabilityStatement
lists. The HTTP layer hands in its route table as (method, path below the base path) pairs, with `{name}`
segments for path parameters; a route added or removed changes the statement with it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

ANY = "{}"  # a path parameter segment, whatever its name
# (method, path shape) -> interaction code, in the order the statement lists them.
TYPE_INTERACTIONS = (
    (("GET", "/{}/{}"), "read"),
    (("GET", "/{}/{}/_history/{}"), "vread"),
    (("PUT", "/{}/{}"), "update"),
    (("PATCH", "/{}/{}"), "patch"),
    (("DELETE", "/{}/{}"), "delete"),
    (("GET", "/{}/{}/_history"), "history-instance"),
    (("GET", "/{}/_history"), "history-type"),
    (("POST", "/{}"), "create"),
    (("GET", "/{}"), "search-type"),
)
SYSTEM_INTERACTIONS = (
    (("POST", ""), "transaction"),
    (("POST", ""), "batch"),
    (("GET", ""), "search-system"),
    (("GET", "/_history"), "history-system"),
)
# Operations defined by HL7 keep their canonical URL; HAPI FHIR's are named as HAPI names them under the base.
HL7_OPERATIONS = {"validate": "http://hl7.org/fhir/OperationDefinition/Resource-validate"}
LEVEL_MARKS = {"system": "s", "type": "t", "instance": "i"}


@dataclass(frozen=True, slots=True)
class Operation:
    name: str  # without the `$`
    level: str  # system, type or instance

    def definition(self, base: str) -> str:
        return HL7_OPERATIONS.get(self.name) or f"{base}/OperationDefinition/-{LEVEL_MARKS[self.level]}-{self.name}"


@dataclass(frozen=True, slots=True)
class Capabilities:
    type_interactions: tuple[str, ...]
    system_interactions: tuple[str, ...]
    operations: tuple[Operation, ...]  # in name order, each level once
    conditional_update: bool  # PUT [type]?search
    conditional_delete: bool  # DELETE [type]?search


def shape(path: str) -> str:
    """`/{type}/{id}` -> `/{}/{}`: path parameters compared by position, not by name."""
    return "/".join(ANY if part.startswith("{") and part.endswith("}") else part for part in path.split("/"))


def capabilities(routes: Iterable[tuple[str, str]]) -> Capabilities:
    shapes = {(method, shape(path)) for method, path in routes}
    operations = {operation for method, path in shapes if (operation := _operation(path)) is not None}
    return Capabilities(
        tuple(code for key, code in TYPE_INTERACTIONS if key in shapes),
        tuple(code for key, code in SYSTEM_INTERACTIONS if key in shapes),
        tuple(sorted(operations, key=lambda op: (op.name, op.level))),
        ("PUT", "/{}") in shapes, ("DELETE", "/{}") in shapes,
    )


def _operation(path: str) -> Operation | None:
    parts = path.split("/")[1:]
    if not parts or not parts[-1].startswith("$"):
        return None
    level = {1: "system", 2: "type", 3: "instance"}.get(len(parts))
    return Operation(parts[-1][1:], level) if level else None
