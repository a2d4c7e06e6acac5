"""The R4 structure of every resource and data type, compiled once per type for the validator.

The table `r4-structures.json.gz` (made by `build_structures` from the R4 definitions) is read once; a
type's `Shape` is built the first time a resource uses it: its JSON keys (each choice type a key of its
own, each primitive element `x` with its `_x` of extensions), the check of every primitive element, the
required elements and the choice groups.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import orjson

from service.fhir.primitives import Check, checker
from service.fhir.resource_types import RESOURCE_TYPES

DATA_FILE = "r4-structures.json.gz"
RESOURCE = "Resource"  # an element holding a resource of any type (contained, Bundle entries, Parameters)
ELEMENT = "Element"  # what a primitive's `_x` holds: an id and extensions


@dataclass(frozen=True, slots=True)
class Field:
    """One JSON key of a type: its element type, whether it repeats, and how its values are checked:
    `check` for a primitive, else `type` names the shape of its objects (`Resource`: by resourceType).
    `segment` is its FHIRPath step (`value.ofType(Quantity)` for `valueQuantity`; `x` for `_x`)."""

    type: str
    many: bool
    segment: str
    check: Check | None = None
    choice: str | None = None
    extends: str | None = None  # for `_x`: the key `x` of the primitive it extends
    partner: str | None = None  # for a primitive `x` and its `_x`: the other key


@dataclass(frozen=True, slots=True)
class Shape:
    """A type (or backbone element) as its JSON objects are checked."""

    name: str
    fields: dict[str, Field]
    required: tuple[tuple[str, tuple[str, ...]], ...]  # (element name, `value[x]` for a choice; its keys)
    is_resource: bool


@cache
def _table() -> dict[str, dict[str, Any]]:
    raw = resources.files(__package__).joinpath(DATA_FILE).read_bytes()
    table: dict[str, dict[str, Any]] = orjson.loads(gzip.decompress(raw))
    return table


@cache
def _checks() -> dict[str, Check]:
    return {name: checker(name, kind, regex) for name, (kind, regex) in _table()["primitives"].items()}


def is_type(name: str) -> bool:
    """Whether the table defines `name` (a resource type, data type or backbone path)."""
    return name in _table()["types"]


@cache
def shape(name: str) -> Shape:
    """The compiled shape of a type the table defines."""
    checks = _checks()
    fields: dict[str, Field] = {}
    required: dict[str, list[str]] = {}
    for key, (type_name, max_, min_, *choice) in _table()["types"][name].items():
        group = choice[0] if choice else None
        segment = f"{group}.ofType({type_name})" if group else key
        check = checks.get(type_name)
        fields[key] = Field(type_name, max_ != "1", segment, check, group, partner="_" + key if check else None)
        if check is not None:
            fields["_" + key] = Field(ELEMENT, max_ != "1", segment, None, group, extends=key, partner=key)
        if min_:  # a primitive is present with its value, its extensions, or both
            required.setdefault(f"{group}[x]" if group else key, []).extend((key, "_" + key) if check else (key,))
    return Shape(name, fields, tuple((element, tuple(keys)) for element, keys in required.items()),
                 name in RESOURCE_TYPES)
