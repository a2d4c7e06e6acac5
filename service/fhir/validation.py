"""Structural validation of a resource against the R4 definitions (pure: no I/O).

Every element of the resource is checked against its type's shape (service/fhir/structures.py): known
element names (choice types by their typed key, primitives with their `_x` extensions), a JSON array for
repeating elements and a single value otherwise, JSON kind and format of every primitive, objects for
complex types, a known `resourceType` for contained and inline resources (Bundle entries, Parameters),
the required elements of every object present, at most one type of each choice. Each problem is an
`Issue` whose `expression` is the FHIRPath of the element (`Patient.name[0].given[1]`).

Not checked: invariants (FHIRPath constraints such as ele-1 beyond empty objects), terminology
bindings, profiles, and whether references resolve.
"""

from __future__ import annotations

from typing import Any

from service.fhir.outcome import Issue
from service.fhir.primitives import describe
from service.fhir.resource_types import RESOURCE_TYPES
from service.fhir.structures import RESOURCE, Field, Shape, shape

MAX_ISSUES = 100  # listed in one outcome; a final issue counts the rest
SHOWN_KEY = 64  # characters of an unknown element name quoted


def resource_issues(resource: dict[str, Any]) -> list[Issue]:
    """Every structural problem of a resource whose `resourceType` names an R4 resource type."""
    res_type = resource["resourceType"]
    if _valid(resource, shape(res_type)):
        return []
    walk = _Walk()
    walk.object(resource, shape(res_type), res_type)
    return walk.finish()


def _valid(value: dict[str, Any], owner: Shape) -> bool:
    """Whether the object is valid for sure. The common cases only, with no paths and no issues to build
    (a write checks valid bodies much more often than invalid ones); False sends the object to the walk
    that names each problem, which also decides the rare cases (a primitive array with its `_x` array)."""
    if not value:
        return False
    fields = owner.fields
    choices: dict[str, str] | None = None
    for key, item in value.items():
        field = fields.get(key)
        if field is None:
            if key != "resourceType" or not owner.is_resource:
                return False
            continue
        if field.choice is not None:
            choices = choices or {}
            if choices.setdefault(field.choice, field.extends or key) != (field.extends or key):
                return False
        if field.many:
            if type(item) is not list or not item or field.partner in value or not _valid_items(field, item):
                return False
        elif field.check is not None:  # the most frequent case, inline
            if field.check(item) is not None:
                return False
        elif type(item) is not dict or not _valid_object(field, item):
            return False
    for _element, keys in owner.required:
        for key in keys:
            if key in value:
                break
        else:
            return False
    return True


def _valid_items(field: Field, items: list[Any]) -> bool:
    check = field.check
    if check is not None:
        for item in items:
            if check(item) is not None:
                return False
        return True
    for item in items:
        if type(item) is not dict or not _valid_object(field, item):
            return False
    return True


def _valid_object(field: Field, item: dict[str, Any]) -> bool:
    if field.type != RESOURCE:
        return _valid(item, shape(field.type))
    res_type = item.get("resourceType")
    return type(res_type) is str and res_type in RESOURCE_TYPES and _valid(item, shape(res_type))


class _Walk:
    """One validation: the issues found so far."""

    def __init__(self) -> None:
        self.issues: list[Issue] = []
        self.unlisted = 0

    def problem(self, code: str, expression: str, diagnostics: str) -> None:
        if len(self.issues) < MAX_ISSUES:
            self.issues.append(Issue("error", code, diagnostics, expression))
        else:
            self.unlisted += 1

    def finish(self) -> list[Issue]:
        if self.unlisted:
            self.issues.append(Issue("error", "too-costly", f"{self.unlisted} more problems are not listed"))
        return self.issues

    def object(self, value: dict[str, Any], owner: Shape, path: str) -> None:
        if not value:
            self.problem("structure", path, f"An empty object is not a valid {owner.name}: leave the element out")
            return
        fields = owner.fields
        choices: dict[str, set[str]] | None = None
        for key, item in value.items():
            field = fields.get(key)
            if field is None:
                self.unknown(key, owner, path)
                continue
            if field.choice is not None:
                choices = choices or {}
                choices.setdefault(field.choice, set()).add(field.extends or key)
            check = field.check
            if field.many:
                if type(item) is not list or not item or field.extends is not None or (
                        check is not None and field.partner in value):
                    self.repeated(field, key, item, value, path)  # and the pairing of a primitive with its `_x`
                elif check is not None:
                    for index, entry in enumerate(item):  # the common cases inline
                        if (message := check(entry)) is not None:
                            self.problem("value", _at(path, field, index), message)
                else:
                    for index, entry in enumerate(item):
                        self.single(field, entry, index, value, path)
            elif type(item) is list:
                self.problem("structure", f"{path}.{field.segment}",
                             f"Element '{key}' does not repeat: a single value was expected, not an array")
            elif check is not None:
                if (message := check(item)) is not None:
                    self.problem("value", _at(path, field, None), message)
            else:
                self.single(field, item, None, value, path)
        self.required(value, owner, path)
        if choices is not None:
            self.one_type_each(choices, path)

    def required(self, value: dict[str, Any], owner: Shape, path: str) -> None:
        for element, keys in owner.required:
            if not any(key in value for key in keys):
                self.problem("required", f"{path}.{element.removesuffix('[x]')}",
                             f"Element '{element}' is required in {owner.name}")

    def unknown(self, key: str, owner: Shape, path: str) -> None:
        if key != "resourceType" or not owner.is_resource:
            name = key if len(key) <= SHOWN_KEY else key[:SHOWN_KEY] + "…"
            self.problem("structure", f"{path}.{name}", f"Unknown element '{name}' in {owner.name}")

    def one_type_each(self, choices: dict[str, set[str]], path: str) -> None:
        for choice, keys in choices.items():
            if len(keys) > 1:
                self.problem("structure", f"{path}.{choice}",
                             f"Only one type of {choice}[x] is allowed, not {', '.join(sorted(keys))}")

    def repeated(self, field: Field, key: str, items: Any, owner: dict[str, Any], path: str) -> None:
        if type(items) is not list:
            self.problem("structure", f"{path}.{field.segment}",
                         f"Element '{key}' repeats: a JSON array was expected, not {describe(items)}")
            return
        if not items:
            self.problem("structure", f"{path}.{field.segment}",
                         f"Element '{key}' is an empty array: leave the element out")
            return
        partner = _partner(field, owner)
        if partner is not None and field.extends is not None and len(partner) != len(items):
            self.problem("structure", f"{path}.{field.segment}",
                         f"'{key}' and '{field.extends}' must have as many items ({len(items)} and {len(partner)})")
        for index, item in enumerate(items):
            if item is None and partner is not None and index < len(partner) and partner[index] is not None:
                continue  # the value or the extensions of this item are in the other array
            self.single(field, item, index, owner, path)

    def single(self, field: Field, item: Any, index: int | None, owner: dict[str, Any], path: str) -> None:
        check = field.check
        if check is not None:
            message = check(item)
            if message is not None:
                self.problem("value", _at(path, field, index), message)
        elif type(item) is not dict:
            self.problem("structure", _at(path, field, index),
                         f"A JSON object ({field.type}) was expected, not {describe(item)}")
        elif field.type == RESOURCE:
            self.resource(item, _at(path, field, index))
        else:
            self.object(item, shape(field.type), _at(path, field, index))

    def resource(self, value: dict[str, Any], path: str) -> None:
        res_type = value.get("resourceType")
        if type(res_type) is str and res_type in RESOURCE_TYPES:
            self.object(value, shape(res_type), path)
        else:
            self.problem("structure", path, f"A resource was expected, with a 'resourceType' naming an R4 "
                                            f"resource type, not {describe(res_type)}")


def _partner(field: Field, owner: dict[str, Any]) -> list[Any] | None:
    """For a repeating primitive `x` or its `_x`: the other array, when both are there."""
    found = owner.get(field.partner) if field.partner is not None else None
    return found if type(found) is list else None


def _at(path: str, field: Field, index: int | None) -> str:
    return f"{path}.{field.segment}" if index is None else f"{path}.{field.segment}[{index}]"
