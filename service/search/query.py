"""Search requests -> typed queries (pure).

`parse_search` turns the parameters of `GET [type]?...` (or a `_search` form) into a `SearchQuery`:
one `Term` per parameter occurrence (repeated parameters AND), each holding its comma-separated
alternatives (OR), plus the result controls (_sort, _count, _include...). Bad values are FhirError 400;
unknown parameters are 400 too unless the request is lenient, when they are listed in `ignored`. Unknown names
starting with `_` (client hints such as fhirpy's `_totalMethod`) are always ignored and listed there.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from service.fhir.errors import invalid
from service.fhir.paging import parse_count
from service.fhir.resource_types import RESOURCE_TYPES
from service.fhir.summary import parse_elements, parse_summary
from service.search.composite import component_definitions
from service.search.cursor import Cursor, decode_cursor
from service.search.definitions import SearchParameter
from service.search.includes import Include, parse_include
from service.search.limits import check_limits
from service.search.near import NearMatch, parse_near
from service.search.query_values import (
    CompositeMatch,
    MissingMatch,
    QueryValue,
    StringMatch,
    TokenText,
    parse_date,
    parse_missing,
    parse_number,
    parse_quantity,
    parse_reference,
    parse_string,
    parse_token,
    parse_uri,
    split_unescaped,
)
from service.search.registry import Registry
from service.search.terms import (
    SearchContext,
    Term,
    UnknownParameter,
    chained_term,
    has_term,
    lookup,
)

CONTROL_PARAMETERS = frozenset({"_count", "_sort", "_total", "_summary", "_elements", "_include", "_revinclude",
                                "_format", "_pretty", "_cursor", "_type"})
# Search parameters of the R4 specification (search.html) that this server does not serve: refused (400), since
# ignoring one would change the results. Any other `_` name the server does not know is ignored, as in HAPI FHIR.
SPECIFIED_UNSUPPORTED = frozenset({"_list", "_filter", "_contained", "_containedType"})
# `:recurse` is the R3 name of `:iterate`, still sent by clients.
ITERATED_INCLUDES = frozenset({"_include:iterate", "_include:recurse", "_revinclude:iterate", "_revinclude:recurse"})
MODIFIERS = {"string": {"exact", "contains"}, "token": {"not", "text"}, "uri": {"above", "below"}}
COLUMN_SORTS = {"_id": "text", "_lastUpdated": "date"}  # sorted on resource columns
SORT_VALUE_KINDS = {"date": "date", "number": "number", "quantity": "number"}  # others sort as text
TOTAL_MODES = {"none": "none", "estimate": "accurate", "accurate": "accurate"}


@dataclass(frozen=True, slots=True)
class SortKey:
    code: str
    kind: str  # the parameter type ("token" for _id, "date" for _lastUpdated)
    descending: bool

    @property
    def value_kind(self) -> str:
        return SORT_VALUE_KINDS.get(self.kind, "text")


@dataclass(frozen=True)
class SearchQuery:
    resource_type: str  # the first type searched (the only one of a type-level search)
    terms: tuple[Term, ...] = ()
    sort: tuple[SortKey, ...] = ()
    count: int = 20
    total: str = "auto"  # "none", "accurate", or "auto": given when known without a count query
    summary_count: bool = False
    summary: str = "false"  # `_summary`: true, text, data, count or false
    elements: tuple[str, ...] = ()
    includes: tuple[Include, ...] = ()
    cursor: Cursor | None = None
    ignored: tuple[str, ...] = ()  # why each ignored parameter was ignored (lenient handling)
    used: frozenset[tuple[str, str]] = frozenset()  # (resource type, code) of every parameter searched on
    link_parameters: tuple[tuple[str, str], ...] = field(default=())  # the request's, for paging links
    other_types: tuple[str, ...] = ()  # a system-level search: the other types it searches
    system: bool = False  # `GET [base]?...`: links go to the base, `_type` names the types

    @property
    def types(self) -> tuple[str, ...]:
        return (self.resource_type, *self.other_types)

    def full_text_code(self) -> str | None:
        """The first `_text` or `_content` a term (or its chain) searches, if any."""
        return next(filter(None, (term.full_text_code() for term in self.terms)), None)


def parse_search(resource_type: str, items: Sequence[tuple[str, str]], context: SearchContext,
                 other_types: tuple[str, ...] | None = None) -> SearchQuery:
    """A type-level search of `resource_type`, or (`other_types` given) a system-level search of it and those.
    (Term, SearchContext and UnknownParameter live in service/search/terms.py, with the chains.)"""
    check_limits(items, context.max_terms, context.max_values)
    controls: dict[str, list[str]] = {}
    terms, ignored, links = [], [], []
    for name, value in items:
        if "\x00" in name or "\x00" in value:
            raise invalid("Search parameters must not contain NUL characters")
        if name != "_cursor":
            links.append((name, value))
        if name in CONTROL_PARAMETERS or name in ITERATED_INCLUDES:
            controls.setdefault(name, []).append(value)
        elif value:  # a parameter with an empty value is ignored, as in HAPI
            if unknown_control(resource_type, name, context.registry):
                ignored.append(f"Unknown parameter '{name}' was ignored: this server ignores parameters starting "
                               "with '_' that it does not know, as HAPI FHIR does")
                continue
            try:
                term = parse_term(resource_type, name, value, context)
                terms.append(common_term(term, other_types, context.registry) if other_types else term)
            except UnknownParameter as problem:
                if not context.lenient:
                    raise invalid(str(problem)) from None
                ignored.append(f"{problem}; it was ignored (Prefer: handling=lenient)")
    used = frozenset(pair for term in terms for pair in term_codes(term))
    unique_terms = tuple(dict.fromkeys(terms))  # `a AND a` is `a`: one SQL condition, however often it is sent
    query = SearchQuery(resource_type, unique_terms, ignored=tuple(ignored), used=used, link_parameters=tuple(links),
                        other_types=other_types or (), system=other_types is not None)
    return apply_controls(query, controls, context)


def common_term(term: Term, other_types: tuple[str, ...], registry: Registry) -> Term:
    """The term as a condition on every searched type: a parameter all of them have, of one parameter type."""
    if term.chain is not None:
        raise invalid(f"Chained parameter '{term.written()}' is not supported in a search of several types")
    for other in other_types:
        kind = lookup(registry, other, term.code).type
        if kind != term.kind:
            raise invalid(f"Parameter '{term.code}' is a {term.kind} parameter of {term.resource_type} and a {kind} "
                          f"parameter of {other}: it cannot search both")
    return replace(term, other_types=other_types)


def unknown_control(resource_type: str, name: str, registry: Registry) -> bool:
    """A `_` name that is neither a parameter of the type nor one of the specification (e.g. fhirpy's
    `_totalMethod`): clients send such names as hints for other servers."""
    code = name.partition(":")[0].partition(".")[0]
    known = SPECIFIED_UNSUPPORTED | CONTROL_PARAMETERS | {"_has"}
    return code.startswith("_") and code not in known and registry.parameter(resource_type, code) is None


def term_codes(term: Term) -> list[tuple[str, str]]:
    """(type, code) of every parameter the term searches on, its chain's included."""
    if term.chain is None:
        return [(res_type, term.code) for res_type in term.types]
    owner = term.chain.resource_type if term.reverse else term.resource_type  # `_has`: a parameter of the source
    return [(owner, term.code), *term_codes(term.chain)]


def requested_types(items: Sequence[tuple[str, str]]) -> tuple[str, ...]:
    """The types named by the `_type` parameters of a system-level search, in order (none: not named)."""
    named = [name.strip() for key, value in items if key == "_type" for name in value.split(",") if name.strip()]
    for name in named:
        if name not in RESOURCE_TYPES:
            raise invalid(f"Unknown resource type '{name[:60]}' in _type")
    return tuple(dict.fromkeys(named))


def parse_term(resource_type: str, name: str, value: str, context: SearchContext, links: int = 0) -> Term:
    """One parameter: plain, chained (`code:Type.inner`, to any depth) or reverse-chained (`_has:Type:code:inner`);
    `links` counts the chain links above it (at most MAX_CHAIN_LINKS in all)."""
    if name.startswith("_has:"):
        return has_term(resource_type, name, value, context, links + 1, parse_term)
    head, dot, chained = name.partition(".")
    code, _, modifier = head.partition(":")
    definition = lookup(context.registry, resource_type, code)
    if dot:
        return chained_term(resource_type, definition, modifier or None, chained, value, context, links + 1,
                            parse_term)
    return simple_term(resource_type, definition, modifier or None, value, context)


def simple_term(resource_type: str, definition: SearchParameter, modifier: str | None, value: str,
                context: SearchContext) -> Term:
    kind, code = definition.type, definition.code
    if definition.full_text:
        return full_text_term(resource_type, code, modifier, value)
    if modifier == "missing":
        return Term(resource_type, code, kind, (parse_missing(value),))
    type_modifier = modifier if kind == "reference" and modifier in RESOURCE_TYPES else None
    if modifier and not type_modifier and modifier not in MODIFIERS.get(kind, ()):
        raise invalid(f"Modifier ':{modifier}' is not supported on the {kind} parameter '{code}'")
    if type_modifier and definition.target and type_modifier not in definition.target:
        raise invalid(f"Parameter '{code}' refers to {', '.join(definition.target)}, not {type_modifier}")
    parts = [part for part in split_unescaped(value, ",") if part]
    if not parts:
        raise invalid(f"Parameter '{code}' has no value: '{value}'")
    values = tuple(dict.fromkeys(parse_value(definition, part, modifier, type_modifier, context) for part in parts))
    return Term(resource_type, code, kind, values, negated=modifier == "not")


def full_text_term(resource_type: str, code: str, modifier: str | None, value: str) -> Term:
    """`_text` or `_content`: each alternative is a web-search expression (words, "phrases", `or`, `-word`)."""
    if modifier:
        raise invalid(f"Modifier ':{modifier}' is not supported on '{code}'")
    parts = [part.strip() for part in split_unescaped(value, ",") if part.strip()]
    if not parts:
        raise invalid(f"Parameter '{code}' has no value: '{value}'")
    return Term(resource_type, code, "string", tuple(StringMatch("text", part) for part in dict.fromkeys(parts)))


def parse_value(definition: SearchParameter, text: str, modifier: str | None, type_modifier: str | None,
                context: SearchContext) -> QueryValue:
    kind = definition.type
    if kind == "composite":
        return parse_composite(definition, text, context)
    if kind == "special":  # `near`, the one special parameter searched (definitions.py)
        return parse_near(text)
    if kind == "string":
        return parse_string(text, modifier)
    if kind == "token":
        return parse_token(text, modifier)
    if kind == "reference":
        return parse_reference(text, type_modifier, definition.target, context.registry.local_bases, context.base)
    if kind == "date":
        return parse_date(text, context.now)
    if kind == "number":
        return parse_number(text)
    if kind == "quantity":
        return parse_quantity(text)
    return parse_uri(text, modifier)


def parse_composite(definition: SearchParameter, text: str, context: SearchContext) -> CompositeMatch:
    """`a$b`: each part a value of its component's parameter, with that type's prefixes and syntax."""
    components = component_definitions(definition)
    parts = split_unescaped(text, "$")
    if len(parts) != len(components):
        raise invalid(f"Parameter '{definition.code}' expects {len(components)} values separated by '$': '{text}'")
    values = []
    for component, part in zip(components, parts):
        if not part:
            raise invalid(f"Parameter '{definition.code}' has an empty component in '{text}'")
        value = parse_value(component, part, None, None, context)
        assert not isinstance(value, (CompositeMatch, TokenText, MissingMatch, NearMatch))  # simple types only
        values.append((component.type, value))
    return CompositeMatch(tuple(values))


def apply_controls(query: SearchQuery, controls: dict[str, list[str]], context: SearchContext) -> SearchQuery:
    resource_type, registry = query.resource_type, context.registry
    last = {name: values[-1] for name, values in controls.items()}
    count = parse_count(last.get("_count"), context.default_count, context.max_count)
    sort = tuple(key for text in controls.get("_sort", ()) for key in parse_sort(query.types, text, registry))
    includes = [parse_include(text, resource_type, registry, reverse=name.startswith("_rev"), iterate=":" in name)
                for name, texts in controls.items() if name.partition(":")[0] in ("_include", "_revinclude")
                for text in texts]
    if "_type" in controls and not query.system:
        raise invalid("_type applies to a system-level search (GET [base]?_type=...), not to a search of one type")
    if includes and query.other_types:
        raise invalid("_include and _revinclude are not supported in a search of several types")
    cursor, summary = last.get("_cursor"), parse_summary(last.get("_summary"))
    return SearchQuery(
        resource_type, query.terms, sort, max(count, 1), parse_total(last.get("_total")),
        summary == "count" or count == 0, summary, parse_elements(controls.get("_elements", ())), tuple(includes),
        decode_cursor(cursor, sort_value_kinds(sort)) if cursor else None,
        query.ignored, query.used, query.link_parameters, query.other_types, query.system,
    )


def parse_total(text: str | None) -> str:
    if text is None:
        return "auto"
    if text not in TOTAL_MODES:
        raise invalid(f"Invalid _total '{text}': expected none, estimate or accurate")
    return TOTAL_MODES[text]


def parse_sort(types: tuple[str, ...], text: str, registry: Registry) -> list[SortKey]:
    keys = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        descending, code = item.startswith("-"), item.removeprefix("-")
        if code in COLUMN_SORTS:
            keys.append(SortKey(code, "token" if code == "_id" else "date", descending))
            continue
        kinds = {sort_kind(registry, resource_type, code) for resource_type in types}
        if len(kinds) > 1:
            raise invalid(f"Cannot sort on '{code}': its parameter type differs between the searched types")
        keys.append(SortKey(code, kinds.pop(), descending))
    return keys


def sort_kind(registry: Registry, resource_type: str, code: str) -> str:
    compiled = registry.parameter(resource_type, code)
    if compiled is None or not compiled.definition.indexed or compiled.definition.type in ("composite", "special"):
        raise invalid(f"Cannot sort on '{code}': not a searchable parameter of '{resource_type}'")
    return compiled.definition.type


def sort_value_kinds(sort: Iterable[SortKey]) -> list[str]:
    return [key.value_kind for key in sort]
