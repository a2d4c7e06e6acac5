"""The search parameters in force: the registry used for extraction and search, and which
(resource type, code) pairs are pending, i.e. not every stored resource is indexed with their
current definition yet. Built from the built-in registry and the custom SearchParameter change log."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from service.fhir.errors import FhirError, invalid
from service.search.definitions import InvalidSearchParameter, custom_definition
from service.search.registry import Registry, concrete_types
from service.search.rows import IndexRows

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class Catalog:
    """An immutable snapshot; a change of the custom parameters produces a new Catalog."""

    registry: Registry
    generation: int = 0
    # resource type -> codes whose index rows may be stale until a reindex
    pending: Mapping[str, frozenset[str]] = field(default_factory=dict)
    unindexed: int = 0  # changes not yet reindexed (with the generation, what identifies this snapshot)
    # resource type -> (generation, code) of every logged change to its definitions, oldest first
    type_changes: Mapping[str, tuple[tuple[int, str], ...]] = field(default_factory=dict)
    # resource type -> custom code -> the generation it was first in force at (sql/0015): a resource indexed
    # before it has no rows of the code. Built-in codes, and codes older than the record, are absent.
    introduced: Mapping[str, Mapping[str, int]] = field(default_factory=dict)

    def pending_codes(self, resource_type: str) -> frozenset[str]:
        return self.pending.get(resource_type, frozenset())

    def stale_codes(self, resource_type: str, index_gen: int) -> frozenset[str]:
        """The codes whose definitions changed since rows of this type were indexed at catalog generation
        `index_gen`: the rows of every other code are current (empty: all are; a change to another
        type's parameters leaves this type's rows alone)."""
        changes = self.type_changes.get(resource_type, ())
        if not changes or changes[-1][0] <= index_gen:
            return frozenset()
        return frozenset(code for generation, code in changes if generation > index_gen)

    def unstored_codes(self, resource_type: str, index_gen: int) -> frozenset[str]:
        """The codes of which a resource of the type indexed at catalog generation `index_gen` has no rows:
        they were first in force later. Its stale rows of these codes need no look in the tables."""
        introduced = self.introduced.get(resource_type, {})
        return frozenset(code for code, generation in introduced.items() if generation > index_gen)

    def index_rows(self, resource: dict[str, Any]) -> IndexRows:
        """The resource's index rows; a body whose shape is not FHIR JSON is refused (400)."""
        try:
            return self.registry.extract(resource)
        except ValueError as exc:
            raise invalid(f"The resource cannot be indexed: {exc}") from None

    def search_parameter_change(self, resource: dict[str, Any]) -> SearchParameterChange:
        """Validate a SearchParameter resource being stored; 422 when it cannot be used."""
        try:
            definition = custom_definition(resource)
            self.registry.copy().add(definition)
        except InvalidSearchParameter as exc:
            raise FhirError(422, f"Invalid SearchParameter: {exc}", code="invalid") from None
        # Retired parameters are stored but not used; draft and active ones are (HAPI uses only active).
        in_force = resource if resource.get("status") != "retired" else None
        return SearchParameterChange(definition.code, list(definition.base), in_force)


@dataclass(frozen=True, slots=True)
class SearchParameterChange:
    """What storing a SearchParameter resource changes: (code, base) and the definition now in force
    (None when it no longer applies)."""

    code: str
    base: list[str]
    definition: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class ChangeLog:
    """What a catalog is built from: the SearchParameter change log as read in one snapshot."""

    generation: int  # the latest change's
    definitions: Sequence[dict[str, Any]] = ()  # the SearchParameter resources in force, oldest first
    pending: Sequence[tuple[str, Sequence[str]]] = ()  # (code, base) of the changes not yet indexed
    changes: Sequence[tuple[int, str, Sequence[str]]] = ()  # (generation, code, base) of every logged change
    introduced: Sequence[tuple[str, str, int]] = ()  # (code, base, generation) each custom pair was first in force


def build_catalog(builtin: Registry, change_log: ChangeLog) -> Catalog:
    registry = builtin.copy()
    for resource in change_log.definitions:
        try:
            registry.add_resource(resource)
        except InvalidSearchParameter as exc:  # stored by an older version that accepted it
            log.warning("search_parameter_skipped", url=resource.get("url"), code=resource.get("code"), reason=str(exc))
    by_type: dict[str, set[str]] = {}
    for code, bases in change_log.pending:
        for resource_type in concrete_types(bases):
            by_type.setdefault(resource_type, set()).add(code)
    type_changes: dict[str, list[tuple[int, str]]] = {}
    for changed_at, code, bases in sorted(change_log.changes):
        for resource_type in concrete_types(bases):
            type_changes.setdefault(resource_type, []).append((changed_at, code))
    return Catalog(registry, change_log.generation, {t: frozenset(codes) for t, codes in by_type.items()},
                   len(change_log.pending), {t: tuple(entries) for t, entries in type_changes.items()},
                   introduced_codes(builtin, change_log.introduced))


def introduced_codes(builtin: Registry, introduced: Sequence[tuple[str, str, int]]) -> dict[str, dict[str, int]]:
    """Per resource type, the generation each custom code was first in force at on it (the earliest over the
    bases that name the type); a code that is also built-in for the type has rows from the start."""
    by_type: dict[str, dict[str, int]] = {}
    for code, base, generation in introduced:
        for resource_type in concrete_types([base]):
            if builtin.parameter(resource_type, code) is None:
                codes = by_type.setdefault(resource_type, {})
                codes[code] = min(generation, codes.get(code, generation))
    return by_type


class Catalogs:
    """The current Catalog of this process, replaced whole when the custom parameters change."""

    def __init__(self, builtin: Registry) -> None:
        self._builtin = builtin
        self.current = Catalog(builtin)

    @property
    def registry(self) -> Registry:
        return self.current.registry

    def pending_codes(self, resource_type: str) -> frozenset[str]:
        return self.current.pending_codes(resource_type)

    def install(self, change_log: ChangeLog) -> bool:
        """Build and install the catalog of the change log unless a newer one is in place already."""
        if change_log.generation < self.current.generation:
            return False
        self.current = build_catalog(self._builtin, change_log)
        return True
