"""Element types of the R4 data model, used to compile paths statically.

The tables come from fhirpathpy's R4 model (generated from the R4 StructureDefinitions): element
path -> type, choice element -> its types, and type -> parent type; and which elements repeat, from
`r4-repeating-elements.json` (written by `build_definitions`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from fhirpathpy.models import models

_R4 = models["r4"]
PATH_TYPES: dict[str, str] = _R4["path2Type"]
CHOICE_TYPES: dict[str, list[str]] = _R4["choiceTypePaths"]
PARENT_TYPES: dict[str, str] = _R4["type2Parent"]
PATHS_DEFINED_ELSEWHERE: dict[str, str] = _R4["pathsDefinedElsewhere"]
# Backbone elements have no entry of their own, only their children do.
BACKBONE_PATHS = frozenset(path.rsplit(".", 1)[0] for path in (*PATH_TYPES, *CHOICE_TYPES))
REPEATING: frozenset[str] = frozenset(
    json.loads(Path(__file__).with_name("r4-repeating-elements.json").read_text(encoding="utf-8")))
PRIMITIVE_TYPES = frozenset(
    "base64Binary boolean canonical code date dateTime decimal id instant integer markdown oid "
    "positiveInt string time unsignedInt uri url uuid".split()
)


@dataclass(frozen=True, slots=True)
class Element:
    """A child element: its JSON key (with the choice suffix), FHIR type, the path for its children, and
    its own definition path (`Address.use` for `Patient.address.use`: where its binding is defined)."""

    key: str
    type: str
    context: str
    path: str


def type_from_suffix(suffix: str) -> str:
    """`DateTime` (from `effectiveDateTime`) -> `dateTime`; complex types keep their name."""
    lowered = suffix[0].lower() + suffix[1:]
    return lowered if lowered in PRIMITIVE_TYPES else suffix


def ancestors(type_name: str) -> list[str]:
    """The type and its parents, nearest first."""
    chain = [type_name]
    while chain[-1] in PARENT_TYPES:
        chain.append(PARENT_TYPES[chain[-1]])
    return chain


def is_a(type_name: str, wanted: str) -> bool:
    return wanted in ancestors(type_name)


@cache
def children(context: str, name: str) -> tuple[Element, ...] | None:
    """The element(s) `name` of `context` (a type or a backbone path); several for a choice element.

    None when the model has no such element.
    """
    owners = ancestors(context) if "." not in context else [context, *ancestors("BackboneElement")]
    for owner in owners:
        path = f"{owner}.{name}"
        path = PATHS_DEFINED_ELSEWHERE.get(path, path)
        if path in CHOICE_TYPES:
            return tuple(Element(name + suffix, type_from_suffix(suffix), type_from_suffix(suffix), path)
                         for suffix in CHOICE_TYPES[path])
        if path in PATH_TYPES:
            type_name = PATH_TYPES[path]
            backbone = type_name in ("BackboneElement", "Element")
            return (Element(name, type_name, path if backbone else type_name, path),)
        if path in BACKBONE_PATHS:
            return (Element(name, "BackboneElement", path, path),)
    return None


def repeats(context: str, name: str) -> bool:
    """Whether the element `name` of `context` (a type or a backbone path) may repeat (a JSON array)."""
    owners = ancestors(context) if "." not in context else [context, *ancestors("BackboneElement")]
    return any(f"{owner}.{name}" in REPEATING for owner in owners)
