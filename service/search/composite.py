"""Composite search parameters (pure): rows that keep the components of one element together.

A composite definition selects elements (`Observation | Observation.component`); each component is an
expression relative to one element, of the type of the search parameter its `definition` URL names. Every
combination of the component values of ONE element is one row, so `code-value-quantity` matches a code and a
value of the same `Observation.component`, never a code of one and a value of another.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from itertools import product
from typing import Any

import orjson

from service.search.definitions import InvalidSearchParameter, SearchParameter, load_builtin
from service.search.fhirpath_compiler import Branch, Runner, compile_node, run_steps
from service.search.fhirpath_parser import UnknownElement, Unsupported, parse
from service.search.rows import CompositeRow, Row, TokenRow
from service.search.values import element_converter

# The component types R4 composites use, and the `jsonb_to_record` columns of each: the fields of its row type.
COMPONENT_COLUMNS = {
    "token": "system text, value text, text text",
    "quantity": "value numeric, system text, unit_code text, unit text",
    "number": "value numeric",
    "date": "low timestamptz, high timestamptz",
    "string": "normalized text, exact text",
    "reference": "target_type text, target_id text, target_url text",
    "uri": "uri text",
}
# R4 (4.0.1) gives DocumentReference `relationship` the definitions of its two components in the wrong order (its
# `code` is the relation token, its `target` the reference): these composites take theirs reversed.
REVERSED_COMPONENTS = frozenset({"http://hl7.org/fhir/SearchParameter/DocumentReference-relationship"})
ComponentRows = Callable[[dict[str, Any], Any], list[Row]]  # (resource, element) -> one component's rows
RESOURCE_VARIABLE = "%resource."  # a component read from the resource, not the element (MolecularSequence)


@dataclass(frozen=True, slots=True)
class CompiledComposite:
    code: str
    # Per typed branch of the composite expression: how to reach its elements, then each component's rows.
    branches: tuple[tuple[Runner, tuple[ComponentRows, ...]], ...]

    def rows(self, resource: dict[str, Any]) -> list[CompositeRow]:
        found = []
        for elements, components in self.branches:
            for element in elements([resource]):
                for combination in product(*(component(resource, element) for component in components)):
                    found.append(CompositeRow(self.code, encode_parts(combination)))
        return found


@cache
def definitions_by_url() -> dict[str, SearchParameter]:
    return {definition.url: definition for definition in load_builtin() if definition.url}


def component_definitions(definition: SearchParameter) -> tuple[SearchParameter, ...]:
    """The definition each component names (an R4 one); raises InvalidSearchParameter for an unknown or
    unusable one."""
    named = []
    for component in definition.component:
        found = definitions_by_url().get(component.definition)
        if found is None or found.type not in COMPONENT_COLUMNS:
            raise InvalidSearchParameter(f"composite {definition.code!r}: component {component.definition!r} is "
                                         "not a known search parameter of a simple type")
        named.append(found)
    if definition.url in REVERSED_COMPONENTS:
        named.reverse()
    if len(named) < 2:
        raise InvalidSearchParameter(f"composite {definition.code!r} needs at least two components")
    return tuple(named)


def encode_parts(rows: tuple[Row, ...]) -> str:
    """The components' row fields by name as JSON (Decimal as its text, keeping its scale)."""
    return orjson.dumps([dict(zip(row._fields[1:], row[1:])) for row in rows], default=str).decode()


def compile_composite(definition: SearchParameter, resource_type: str,
                      local_bases: tuple[str, ...]) -> CompiledComposite:
    """Raises InvalidSearchParameter when the expression or a component does not compile."""
    types = [named.type for named in component_definitions(definition)]
    try:
        elements = compile_node(parse(definition.expression or ""), [Branch(resource_type, resource_type)])
        branches = tuple(
            (run_steps(element.steps) if element.steps else _same,
             tuple(compile_component(c.expression, element, resource_type, kind, local_bases)
                   for c, kind in zip(definition.component, types)))
            for element in elements)
    except (Unsupported, UnknownElement) as problem:
        raise InvalidSearchParameter(f"composite {definition.code!r} on {resource_type}: {problem}") from None
    return CompiledComposite(definition.code, branches)


def compile_component(expression: str, element: Branch, resource_type: str, kind: str,
                      local_bases: tuple[str, ...]) -> ComponentRows:
    from_resource = expression.startswith(RESOURCE_VARIABLE)
    if from_resource:
        expression = expression.removeprefix(RESOURCE_VARIABLE)
    start = Branch(resource_type, resource_type) if from_resource else Branch(element.type, element.context, (),
                                                                                 element.path)
    typed = [(run_steps(branch.steps) if branch.steps else _same,
              element_converter(kind, branch.type, branch.path, local_bases))
             for branch in compile_node(parse(expression), [start])]

    def rows(resource: dict[str, Any], element_value: Any) -> list[Row]:
        found: list[Row] = []
        for run, convert in typed:
            for value in run([resource if from_resource else element_value]):
                # A concept's text-only token row matches no `system|code`: it would only multiply the rows.
                found.extend(row for row in convert("", value) if not (type(row) is TokenRow and row.value is None))
        return found
    return rows


def _same(items: list[Any]) -> list[Any]:
    return items
