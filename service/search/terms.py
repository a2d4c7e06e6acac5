"""Search terms and their chains (pure): `code:Type.inner=v` (forward, to any depth) and `_has:Type:code:inner=v`
(reverse: resources that resources of Type refer to through `code`), nested in each other up to MAX_CHAIN_LINKS
links. The inner term is parsed by the caller's `parse` (service/search/query.py), which recurses back here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from service.fhir.errors import invalid
from service.fhir.resource_types import RESOURCE_TYPES
from service.search.definitions import SearchParameter
from service.search.query_values import QueryValue, StringMatch
from service.search.registry import Registry

# Each link is one more join for PostgreSQL; four reach from a PractitionerRole to its organization's
# endpoint's managing organization, which is as far as real queries go.
MAX_CHAIN_LINKS = 4


class UnknownParameter(Exception):
    """A parameter this server cannot search on; ignored under `Prefer: handling=lenient`."""


@dataclass(frozen=True, slots=True)
class Term:
    resource_type: str
    code: str
    kind: str  # the parameter's type: string, token, date, number, quantity, uri, reference, composite, special (near)
    values: tuple[QueryValue, ...] = ()  # alternatives (OR)
    negated: bool = False  # `:not`: no value of the resource matches any alternative
    chain: Term | None = None  # the term the referenced (or, reversed, the referring) resources must match
    other_types: tuple[str, ...] = ()  # a search of several types: the parameter of the same code of these too
    reverse: bool = False  # `_has`: `code` is a parameter of `chain.resource_type` referring to this type

    @property
    def types(self) -> tuple[str, ...]:
        return (self.resource_type, *self.other_types)

    def written(self) -> str:
        """The parameter name as a client writes it, for messages."""
        if self.chain is None:
            return self.code
        if self.reverse:
            return f"_has:{self.chain.resource_type}:{self.code}:{self.chain.written()}"
        return f"{self.code}:{self.chain.resource_type}.{self.chain.written()}"

    def linked_types(self) -> list[str]:
        """The types of every resource the chain reads beside the searched one, nearest first."""
        return [self.chain.resource_type, *self.chain.linked_types()] if self.chain else []

    def full_text_code(self) -> str | None:
        """`_text` or `_content` when this term or its chain searches full text (sql/0010_resource_text.sql)."""
        if any(isinstance(value, StringMatch) and value.mode == "text" for value in self.values):
            return self.code
        return self.chain.full_text_code() if self.chain else None


@dataclass(frozen=True, slots=True)
class SearchContext:
    registry: Registry
    base: str  # the absolute base URL of this request (references on `registry.local_bases` are local too)
    now: datetime  # for `ap` on dates
    lenient: bool
    default_count: int
    max_count: int
    max_terms: int = 30  # parameters per request (FHIR_MAX_SEARCH_TERMS)
    max_values: int = 1000  # comma-separated values per request, over all parameters (FHIR_MAX_SEARCH_VALUES)


Parse = Callable[[str, str, str, SearchContext, int], Term]  # (type, name, value, context, links) -> term


def lookup(registry: Registry, resource_type: str, code: str) -> SearchParameter:
    compiled = registry.parameter(resource_type, code)
    if compiled is None:
        raise UnknownParameter(f"Unknown search parameter '{code}' for resource type '{resource_type}'")
    if not compiled.definition.searchable:
        kind = compiled.definition.type
        raise UnknownParameter(f"Search parameter '{code}' ({kind}) of '{resource_type}' is not supported")
    return compiled.definition


def _check_links(name: str, links: int) -> None:
    if links > MAX_CHAIN_LINKS:
        raise invalid(f"Parameter '{name[:200]}' chains more than {MAX_CHAIN_LINKS} references, the most a search "
                      "may follow")


def chained_term(resource_type: str, definition: SearchParameter, modifier: str | None, chained: str, value: str,
                 context: SearchContext, links: int, parse: Parse) -> Term:
    code = definition.code
    _check_links(f"{code}.{chained}", links)
    if definition.type != "reference":
        raise invalid(f"Cannot chain on '{code}': it is a {definition.type} parameter, not a reference")
    if modifier is not None and modifier not in RESOURCE_TYPES:
        raise invalid(f"Cannot chain on '{code}:{modifier}': ':{modifier}' is not a resource type")
    target = modifier or (definition.target[0] if len(definition.target) == 1 else None)
    if target is None:
        kinds = ", ".join(definition.target) or "any type"
        raise invalid(f"Chained parameter '{code}.{chained}': '{code}' may refer to {kinds}; "
                      f"name the type, as in {code}:Type.{chained}")
    if definition.target and target not in definition.target:
        raise invalid(f"Parameter '{code}' refers to {', '.join(definition.target)}, not {target}")
    return Term(resource_type, code, "reference", chain=parse(target, chained, value, context, links))


def has_term(resource_type: str, name: str, value: str, context: SearchContext, links: int, parse: Parse) -> Term:
    """`_has:Source:code:inner`: resources of `resource_type` that some Source matching `inner` refers to by `code`."""
    _check_links(name, links)
    parts = name.split(":", 3)
    if len(parts) != 4 or not all(parts):
        raise invalid(f"Invalid parameter '{name[:200]}': expected _has:Type:reference parameter:search parameter")
    source, code, inner = parts[1:]
    if source not in RESOURCE_TYPES:
        raise invalid(f"Invalid parameter '{name[:200]}': '{source[:60]}' is not a resource type")
    definition = lookup(context.registry, source, code)
    if definition.type != "reference":
        raise invalid(f"Invalid parameter '{name[:200]}': '{code}' is a {definition.type} parameter of {source}, "
                      "not a reference")
    if definition.target and resource_type not in definition.target:
        raise invalid(f"Invalid parameter '{name[:200]}': {source}:{code} refers to "
                      f"{', '.join(definition.target)}, not {resource_type}")
    return Term(resource_type, code, "reference", chain=parse(source, inner, value, context, links), reverse=True)
