"""What a search may show its token, beyond the `{Type}.search` of the path rule (pure, as privileges.py).

A search reads more than its own type: `_include` and `_revinclude` (`:iterate` too) return resources of other
types, and a chained parameter (`subject:Patient.family=x`, at any depth) or a reverse chain
(`_has:Observation:patient:code=x`) filters on other types' data, so it answers yes or no about them.
Each of those types X needs `X.read`, the privilege of `GET /X/{id}`. The searched type itself is covered by
`{Type}.search`, since the search returns its resources anyway.

- An explicit request for a type (every type along a chain or `_has`, `Type:param:Target`, an include whose
  parameter refers to one type only, `_revinclude=Source:param`) without its privilege is refused: 403 naming
  every missing privilege.
- A wildcard (`_include=*`, `_revinclude=*`, an include whose parameter may refer to several types and names
  none) is narrowed to the types the token may read; the searchset says which types were left out. It says so
  whether or not such resources exist, so the note itself tells nothing about the data.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from service.fhir.errors import FhirError
from service.search.includes import ALL_TYPES, Include
from service.search.query import SearchQuery

READ = "read"
SEARCH = "search"


@dataclass(frozen=True)
class SearchAccess:
    query: SearchQuery  # with its wildcard includes narrowed to the readable types
    left_out: tuple[str, ...]  # one note per narrowed include: what it leaves out, and why


def readable_types(privileges: frozenset[str], searched: tuple[str, ...]) -> frozenset[str]:
    """The types whose resources a search of the `searched` types may return with these privileges."""
    suffix = f".{READ}"
    readable = {privilege[:-len(suffix)] for privilege in privileges if privilege.endswith(suffix)}
    return frozenset({*readable, *searched})


def searchable_types(requested: tuple[str, ...], privileges: frozenset[str]) -> tuple[tuple[str, ...], str | None]:
    """The types a system-level search covers, and a note on those it leaves out. Types named by `_type` need
    `{Type}.search` each (403 naming the missing ones); without `_type`, every type the token may search."""
    if requested:
        missing = [f"{res_type}.{SEARCH}" for res_type in requested if f"{res_type}.{SEARCH}" not in privileges]
        if missing:
            verb = "privilege {} is" if len(missing) == 1 else "privileges {} are"
            raise FhirError(403, f"The {verb.format(', '.join(missing))} required for this search (_type)",
                            code="forbidden")
        return requested, None
    allowed = tuple(res_type for res_type in ALL_TYPES if f"{res_type}.{SEARCH}" in privileges)
    if not allowed:
        raise FhirError(403, f"A {{Type}}.{SEARCH} privilege is required for a system-level search", code="forbidden")
    left_out = [f"{res_type}.{SEARCH}" for res_type in ALL_TYPES if res_type not in allowed]
    note = (f"The types this token may not search are left out of this search without _type; it lacks "
            f"{', '.join(left_out)}") if left_out else None
    return allowed, note


def explicit_reads(query: SearchQuery) -> dict[str, list[str]]:
    """Type -> what in the query reads it by name (chains and explicit includes), in query order."""
    reads: dict[str, list[str]] = {}
    for term in query.terms:
        for res_type in term.linked_types():  # every type a chain (or `_has`) reads, at any depth
            reads.setdefault(res_type, []).append(term.written())
    for include in query.includes:
        if not include.wildcard:
            for res_type in include.types:
                reads.setdefault(res_type, []).append(include.text)
    return reads


def authorize_search(query: SearchQuery, privileges: frozenset[str]) -> SearchAccess:
    """The query to run for a token with `privileges`; FhirError 403 when it names a type the token may not read."""
    readable = readable_types(privileges, query.types)
    missing = {res_type: why for res_type, why in explicit_reads(query).items() if res_type not in readable}
    if missing:
        raise FhirError(403, _refusal(missing), code="forbidden")
    includes, notes = [], []
    for include in query.includes:
        if include.wildcard and not readable.issuperset(include.types):
            notes.append(_left_out(include, readable))
            include = include.narrowed(readable)
        includes.append(include)
    return SearchAccess(replace(query, includes=tuple(includes)), tuple(notes))


def _refusal(missing: dict[str, list[str]]) -> str:
    privileges = [f"{res_type}.{READ}" for res_type in sorted(missing)]
    reasons = ", ".join(dict.fromkeys(reason for res_type in sorted(missing) for reason in missing[res_type]))
    verb = "privilege {} is" if len(privileges) == 1 else "privileges {} are"
    return f"The {verb.format(', '.join(privileges))} required for this search ({reasons})"


def _left_out(include: Include, readable: frozenset[str]) -> str:
    privileges = ", ".join(f"{res_type}.{READ}" for res_type in include.types if res_type not in readable)
    return (f"{include.text}: resources of the types this token may not read are left out (whether or not any "
            f"exist); it lacks {privileges}")
