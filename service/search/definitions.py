"""Search parameter definitions: the R4 built-ins and custom SearchParameter resources.

The built-in set is `r4-search-parameters.json`, extracted by `build_definitions` from the official
HL7 FHIR R4 (4.0.1) SearchParameter resources (npm `hl7.fhir.r4.examples@4.0.1`, published by HL7
under CC0-1.0): the 1,375 definitions that carry a standards-status extension.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import orjson

from service.fhir.resource_types import RESOURCE_TYPES

DATA_FILE = "r4-search-parameters.json"
PARAMETER_TYPES = frozenset(
    {"number", "date", "string", "token", "reference", "composite", "quantity", "uri", "special"}
)
INDEXED_TYPES = frozenset({"number", "date", "string", "token", "reference", "quantity", "uri"})
ABSTRACT_BASES = frozenset({"Resource", "DomainResource"})
NEAR_EXPRESSION = "Location.position"  # the one R4 special parameter indexed: `near`, by coordinates
FULL_TEXT_CODES = frozenset({"_text", "_content"})


class InvalidSearchParameter(ValueError):
    """A custom SearchParameter that cannot be used; the message says why."""


@dataclass(frozen=True, slots=True)
class Component:
    definition: str
    expression: str


@dataclass(frozen=True, slots=True)
class SearchParameter:
    code: str
    base: tuple[str, ...]
    type: str
    expression: str | None
    target: tuple[str, ...] = ()
    url: str | None = None
    modifiers: tuple[str, ...] = ()
    comparators: tuple[str, ...] = ()
    multiple_or: bool | None = None
    multiple_and: bool | None = None
    component: tuple[Component, ...] = ()

    @property
    def indexed(self) -> bool:
        """Whether extraction produces rows for it (special ones other than `near` are left out)."""
        if self.type == "composite":
            return bool(self.expression) and bool(self.component)
        if self.type == "special":
            return self.expression == NEAR_EXPRESSION
        return self.type in INDEXED_TYPES and bool(self.expression)

    @property
    def full_text(self) -> bool:
        """`_text` and `_content`: searched in the full-text table (sql/0010_resource_text.sql), not in index rows."""
        return self.code in FULL_TEXT_CODES and not self.expression

    @property
    def searchable(self) -> bool:
        return self.indexed or self.full_text


def definition_from_json(data: dict[str, Any]) -> SearchParameter:
    """A definition from a SearchParameter resource or a record of the packaged file (same keys)."""
    return SearchParameter(
        code=data["code"],
        base=tuple(data["base"]),
        type=data["type"],
        expression=data.get("expression") or None,
        target=tuple(data.get("target", ())),
        url=data.get("url"),
        modifiers=tuple(data.get("modifier", ())),
        comparators=tuple(data.get("comparator", ())),
        multiple_or=data.get("multipleOr"),
        multiple_and=data.get("multipleAnd"),
        component=tuple(Component(c["definition"], c["expression"]) for c in data.get("component", ())),
    )


@cache
def load_builtin() -> tuple[SearchParameter, ...]:
    """The R4 search parameters, read once from the package data."""
    raw = resources.files(__package__).joinpath(DATA_FILE).read_bytes()
    return tuple(definition_from_json(record) for record in orjson.loads(raw))


def custom_definition(resource: dict[str, Any]) -> SearchParameter:
    """Validate the shape of a custom SearchParameter resource (compilation is checked by the registry)."""
    if resource.get("resourceType") != "SearchParameter":
        raise InvalidSearchParameter("resourceType must be SearchParameter")
    code, kind, bases = resource.get("code"), resource.get("type"), resource.get("base")
    if not isinstance(code, str) or not code.strip():
        raise InvalidSearchParameter("SearchParameter.code is required")
    if kind not in PARAMETER_TYPES:
        raise InvalidSearchParameter(f"SearchParameter.type {kind!r} is not an R4 search parameter type")
    if not isinstance(bases, list) or not bases:
        raise InvalidSearchParameter("SearchParameter.base must list at least one resource type")
    unknown = [b for b in bases if b not in RESOURCE_TYPES and b not in ABSTRACT_BASES]
    if unknown:
        names = ", ".join(map(str, unknown))
        raise InvalidSearchParameter(f"SearchParameter.base has unknown resource types: {names}")
    expression = resource.get("expression")
    if not isinstance(expression, str) or not expression.strip():
        raise InvalidSearchParameter(f"SearchParameter {code!r} has no expression")
    return definition_from_json(resource)
