"""`_include` and `_revinclude` values -> `Include`s that know the resource types they may return (pure).

The types matter for access control: a search must not return resources its token may not read. An include
that names its type (`Encounter:subject:Patient`, a parameter that refers to one type only, every
`_revinclude=Source:param`) is *explicit*; one that does not (`*`, a parameter that may refer to several
types) is a *wildcard*, which the HTTP layer narrows to the readable types (`Include.narrowed`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from service.fhir.errors import invalid
from service.fhir.resource_types import RESOURCE_TYPES
from service.search.definitions import SearchParameter
from service.search.registry import Registry

ALL_TYPES = tuple(sorted(RESOURCE_TYPES))


@dataclass(frozen=True, slots=True)
class Include:
    text: str  # as the client wrote it, e.g. "_include=Encounter:subject", for messages
    parameters: tuple[tuple[str, str], ...]  # (source type, reference parameter code) followed
    types: tuple[str, ...]  # sorted; the types it returns: targets (_include) or referring sources (_revinclude)
    reverse: bool  # _revinclude: resources that refer to the matches
    wildcard: bool  # the client named no single type: narrowed to the readable types instead of refused
    iterate: bool = False  # `:iterate`: applied to the included resources too, round after round

    def narrowed(self, readable: frozenset[str]) -> Include:
        """Only the resources of `readable` types (for a _revinclude: only parameters of readable sources)."""
        parameters = tuple(pair for pair in self.parameters if not self.reverse or pair[0] in readable)
        return replace(self, parameters=parameters, types=tuple(t for t in self.types if t in readable))


def parse_include(text: str, resource_type: str, registry: Registry, reverse: bool, iterate: bool = False) -> Include:
    """An include of the searched `resource_type`'s matches; an iterated one may start from any type (it also
    applies to the resources the includes added)."""
    name = ("_revinclude" if reverse else "_include") + (":iterate" if iterate else "")
    written = f"{name}={text}"
    if text == "*":
        if reverse:
            return replace(_referring_everything(written, resource_type, registry), iterate=iterate)
        definitions = _references(registry, resource_type)
        parameters = tuple((resource_type, definition.code) for definition in definitions)
        return Include(written, parameters, _targets(definitions), reverse=False, wildcard=True, iterate=iterate)
    parts = text.split(":")
    if len(parts) not in (2, 3):
        raise invalid(f"Invalid {name} '{text}': expected SourceType:parameter[:TargetType]")
    source, code, target = parts[0], parts[1], parts[2] if len(parts) == 3 else None
    if not reverse and not iterate and source != resource_type:
        raise invalid(f"Invalid _include '{text}': the source type must be {resource_type}")
    compiled = registry.parameter(source, code) if source in RESOURCE_TYPES else None
    if compiled is None or compiled.definition.type != "reference":
        raise invalid(f"Invalid {name} '{text}': '{code}' is not a reference parameter of '{source}'")
    if target is not None and target not in RESOURCE_TYPES:
        raise invalid(f"Invalid {name} '{text}': '{target}' is not a resource type")
    if reverse and not iterate and target is not None and target != resource_type:
        raise invalid(f"Invalid _revinclude '{text}': the target type must be {resource_type}")
    if reverse:
        return Include(written, ((source, code),), (source,), reverse=True, wildcard=False, iterate=iterate)
    types = (target,) if target else _targets([compiled.definition])
    return Include(written, ((source, code),), types, reverse=False, wildcard=len(types) > 1, iterate=iterate)


def _references(registry: Registry, resource_type: str) -> list[SearchParameter]:
    return [p.definition for p in registry.parameters(resource_type)
            if p.definition.type == "reference" and p.definition.indexed]


def _targets(definitions: list[SearchParameter]) -> tuple[str, ...]:
    """The types these parameters may refer to; a parameter that declares none may refer to any."""
    if any(not definition.target for definition in definitions):
        return ALL_TYPES
    return tuple(sorted({target for definition in definitions for target in definition.target}))


def _referring_everything(written: str, resource_type: str, registry: Registry) -> Include:
    """`_revinclude=*`: every reference parameter of every type that may refer to `resource_type`."""
    parameters = tuple((source, definition.code) for source in ALL_TYPES
                       for definition in _references(registry, source)
                       if not definition.target or resource_type in definition.target)
    types = tuple(sorted({source for source, _ in parameters}))
    return Include(written, parameters, types, reverse=True, wildcard=True)
