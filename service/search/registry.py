"""The search parameter registry: resource type -> compiled parameters, and the extraction hot path.

`Registry.builtin()` holds the R4 set; `add` / `add_resource` install custom parameters, which
replace a parameter with the same code on the same base. A registry knows this service's base URLs
(`local_bases`): a reference to an absolute URL on one of them is indexed as a local `Type/id`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from typing import Any, TypeVar

from service.fhir.resource_types import RESOURCE_TYPES
from service.search.composite import CompiledComposite, compile_composite
from service.search.definitions import InvalidSearchParameter, SearchParameter, custom_definition, load_builtin
from service.search.fallback import SyntaxProblem, check_syntax, fallback_runner
from service.search.fhirpath_compiler import CompiledBranch, Runner, compile_expression
from service.search.fhirpath_parser import UnknownElement, Unsupported
from service.search.rows import CompositeRow, IndexRows, Row
from service.search.shapes import shape_converter
from service.search.values import Converter, element_converter

NOT_DOMAIN_RESOURCES = frozenset({"Bundle", "Binary", "Parameters"})
# The parameter types of the IndexRows fields, in order (a `special` one is `near`, see definitions.py).
SINKS = ("string", "token", "date", "number", "quantity", "uri", "reference", "special")
# One branch to extract: (code, sink index, rest runner | None, converter).
Entry = tuple[str, int, Runner | None, Converter]
Sinks = tuple[list[Row], ...]  # the rows of each index type, in IndexRows order
R = TypeVar("R", Row, CompositeRow)


@dataclass(frozen=True, slots=True)
class CompiledParameter:
    definition: SearchParameter
    resource_type: str
    branches: tuple[tuple[CompiledBranch, Converter], ...]  # empty for composite and special parameters
    compiled: bool  # False: evaluated by fhirpathpy
    composite: CompiledComposite | None = None


@dataclass(frozen=True, slots=True)
class ExtractionPlan:
    """A type's parameters grouped by the resource key their branches start from, so an absent
    element costs one lookup for all the parameters that read it."""

    by_key: dict[str, tuple[Entry, ...]]
    from_root: tuple[Entry, ...]  # branches that start from [resource]
    codes: frozenset[str]
    composites: tuple[CompiledComposite, ...] = ()


def concrete_bases(definition: SearchParameter) -> list[str]:
    return concrete_types(definition.base)


def concrete_types(bases: Iterable[str]) -> list[str]:
    """Resource types named by a base list, with `Resource` and `DomainResource` expanded."""
    result: set[str] = set()
    for base in bases:
        if base == "Resource":
            result |= RESOURCE_TYPES
        elif base == "DomainResource":
            result |= RESOURCE_TYPES - NOT_DOMAIN_RESOURCES
        else:
            result.add(base)
    return sorted(result)


def compile_parameter(definition: SearchParameter, resource_type: str,
                      local_bases: tuple[str, ...] = ()) -> CompiledParameter:
    """Compile one definition for one resource type; raises InvalidSearchParameter."""
    expression = definition.expression
    if definition.type == "composite" and definition.indexed:
        return CompiledParameter(definition, resource_type, (), True, compile_composite(definition, resource_type,
                                                                                        local_bases))
    if not definition.indexed or not expression:  # an indexed one has an expression: this says so to mypy
        if expression:  # composite/special: not extracted here, but must be valid FHIRPath
            check_syntax(expression)
        return CompiledParameter(definition, resource_type, (), True)
    try:
        branches = compile_expression(expression, resource_type)
    except UnknownElement as problem:
        raise InvalidSearchParameter(f"expression {expression!r} on {resource_type}: {problem}") from None
    except Unsupported:
        fallback = CompiledBranch("", None, fallback_runner(expression, resource_type))
        untyped = ((fallback, shape_converter(definition.type, local_bases)),)
        return CompiledParameter(definition, resource_type, untyped, False)
    if not branches:
        raise InvalidSearchParameter(f"expression {expression!r} selects nothing on {resource_type}")
    typed = tuple((branch, element_converter(definition.type, branch.type, branch.path, local_bases))
                  for branch in branches)
    return CompiledParameter(definition, resource_type, typed, True)


def build_plan(parameters: Iterable[CompiledParameter]) -> ExtractionPlan:
    by_key: defaultdict[str, list[Entry]] = defaultdict(list)
    from_root: list[Entry] = []
    codes: set[str] = set()
    composites = []
    for parameter in parameters:
        code = parameter.definition.code
        if parameter.composite is not None:
            composites.append(parameter.composite)
            codes.add(code)
        for branch, convert in parameter.branches:  # only indexed types have branches
            sink = SINKS.index(parameter.definition.type)
            entry: Entry = (code, sink, branch.rest, convert)
            (by_key[branch.first_key] if branch.first_key else from_root).append(entry)
            codes.add(code)
    return ExtractionPlan({k: tuple(v) for k, v in by_key.items()}, tuple(from_root), frozenset(codes),
                          tuple(composites))


def run_entries(entries: tuple[Entry, ...], start: list[Any], sinks: Sinks) -> None:
    for code, sink, rest, convert in entries:
        values = rest(start) if rest is not None else start
        if values:
            rows = sinks[sink]
            for value in values:
                rows += convert(code, value)


def unique(rows: list[R]) -> tuple[R, ...]:
    """The rows without repeats, in first-seen order. A few rows are compared pairwise, which is cheaper
    than hashing the fresh Decimal and datetime values they hold (rows of different codes differ at once)."""
    if len(rows) < 2:
        return tuple(rows)
    if len(rows) > 4:
        return tuple(dict.fromkeys(rows))
    kept: list[R] = []
    for row in rows:
        if row not in kept:
            kept.append(row)
    return tuple(kept)


class Registry:
    def __init__(self, definitions: Iterable[SearchParameter] = (), local_bases: tuple[str, ...] = ()):
        self.local_bases = local_bases
        self._parameters: dict[str, dict[str, CompiledParameter]] = {t: {} for t in RESOURCE_TYPES}
        # per resource type, and per (type, codes) for extractions of some codes only
        self._plans: dict[str | tuple[str, frozenset[str]], ExtractionPlan] = {}
        for definition in definitions:
            self.add(definition)

    @classmethod
    def builtin(cls, local_bases: tuple[str, ...] = ()) -> Registry:
        """The R4 parameters: compiled once per process (and set of bases), handed out as independent copies."""
        return _compiled_builtin(local_bases).copy()

    def copy(self) -> Registry:
        """An independent registry with the same compiled parameters (cheap: nothing is recompiled)."""
        clone = Registry(local_bases=self.local_bases)
        clone._parameters = {res_type: dict(parameters) for res_type, parameters in self._parameters.items()}
        return clone

    def add(self, definition: SearchParameter) -> None:
        """Compile for every base, then install (all or nothing); raises InvalidSearchParameter."""
        try:
            compiled = [compile_parameter(definition, base, self.local_bases) for base in concrete_bases(definition)]
        except (Unsupported, SyntaxProblem) as problem:
            message = f"expression {definition.expression!r} does not compile: {problem}"
            raise InvalidSearchParameter(message) from None
        for parameter in compiled:
            self._parameters[parameter.resource_type][definition.code] = parameter
        self._plans.clear()  # rare (a catalog is built once per change): the plans are rebuilt on demand

    def add_resource(self, resource: dict[str, Any]) -> SearchParameter:
        """Validate and install a custom SearchParameter resource; raises InvalidSearchParameter."""
        definition = custom_definition(resource)
        self.add(definition)
        return definition

    def parameters(self, resource_type: str) -> tuple[CompiledParameter, ...]:
        return tuple(self._parameters.get(resource_type, {}).values())

    def parameter(self, resource_type: str, code: str) -> CompiledParameter | None:
        return self._parameters.get(resource_type, {}).get(code)

    def extract(self, resource: dict[str, Any], codes: frozenset[str] | None = None) -> IndexRows:
        """The index rows of a resource (a parsed JSON dict) for all its type's parameters, or for those of
        `codes` only (a reindex after some definitions changed: the other rows are current).

        Raises ValueError for an unknown resource type or a body whose shape is not FHIR JSON.
        """
        resource_type: Any = resource.get("resourceType")  # parsed JSON, checked below
        plan = self._plans.get(resource_type if codes is None else (resource_type, codes))
        if plan is None:
            plan = self._plan(resource_type, codes)
        try:
            sinks = collect(plan, resource)
            composites = [row for composite in plan.composites for row in composite.rows(resource)]
        except (AttributeError, TypeError) as problem:  # e.g. a string where an object belongs
            raise ValueError(f"malformed {resource_type}/{resource.get('id')}: {problem}") from None
        produced = {row[0] for rows in sinks for row in rows}  # cheaper than tracking it per parameter
        produced.update(row.code for row in composites)
        return IndexRows._make((*map(unique, sinks), unique(composites), plan.codes.difference(produced)))

    def _plan(self, resource_type: Any, codes: frozenset[str] | None) -> ExtractionPlan:
        if resource_type not in self._parameters:
            raise ValueError(f"not a resource type: {resource_type!r}")
        parameters = self._parameters[resource_type]
        if codes is None:
            plan = self._plans[resource_type] = build_plan(parameters.values())
        else:
            chosen = (parameter for code, parameter in parameters.items() if code in codes)
            plan = self._plans[(resource_type, codes)] = build_plan(chosen)
        return plan


def collect(plan: ExtractionPlan, resource: dict[str, Any]) -> Sinks:
    """The rows of every parameter, per index type (IndexRows order), with duplicates."""
    sinks: Sinks = ([], [], [], [], [], [], [], [])
    if plan.from_root:
        run_entries(plan.from_root, [resource], sinks)
    by_key = plan.by_key
    for key, value in resource.items():
        entries = by_key.get(key)
        if entries is not None and value is not None:
            start = value if value.__class__ is list else [value]
            for code, sink, rest, convert in entries:  # run_entries, inlined: the hottest loop
                values = rest(start) if rest is not None else start
                if values:
                    rows = sinks[sink]
                    for item in values:
                        rows += convert(code, item)
    return sinks


@cache
def _compiled_builtin(local_bases: tuple[str, ...]) -> Registry:
    return Registry(load_builtin(), local_bases)
