"""The FHIR type of an untyped JSON value, guessed from its shape.

The fallback engine (fhirpathpy) returns plain JSON without types; this picks the converter for its
results. Compiled expressions never need it: their types are known statically.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from service.search.near import position_rows
from service.search.rows import Row
from service.search.values import Converter, converter

# Distinctive keys, checked in order (a Quantity and an Identifier both have `value`: see below).
SHAPES = (
    ("resourceType", "Resource"),
    ("reference", "Reference"),
    ("coding", "CodeableConcept"),
    ("family", "HumanName"), ("given", "HumanName"), ("prefix", "HumanName"), ("suffix", "HumanName"),
    ("line", "Address"), ("city", "Address"), ("district", "Address"), ("state", "Address"),
    ("postalCode", "Address"), ("country", "Address"),
    ("currency", "Money"),
    ("low", "Range"), ("high", "Range"),
    ("start", "Period"), ("end", "Period"),
    ("event", "Timing"), ("repeat", "Timing"),
    ("origin", "SampledData"),
)


def dict_type(value: dict[str, Any]) -> str:
    for key, type_name in SHAPES:
        if key in value:
            return type_name
    if "url" in value and any(key.startswith("value") and len(key) > 5 for key in value):
        return "Extension"
    if "value" in value:
        number = isinstance(value["value"], (int, float, Decimal)) and type(value["value"]) is not bool
        return "Quantity" if number else ("ContactPoint" if "rank" in value else "Identifier")
    if "code" in value or "system" in value or "display" in value:
        return "Coding"
    return "CodeableConcept" if "text" in value else "Element"


def value_type(value: object) -> str:
    if isinstance(value, dict):
        return dict_type(value)
    if type(value) is bool:
        return "boolean"
    if isinstance(value, (int, float, Decimal)):
        return "decimal"
    return "string"


def shape_converter(parameter_type: str, local_bases: tuple[str, ...] = ()) -> Converter:
    """A converter that picks the typed converter per value (`local_bases` as for `converter`)."""
    if parameter_type == "special":  # `near`: its values are Location.position elements
        return position_rows

    def convert(code: str, value: object) -> tuple[Row, ...]:
        type_name = value_type(value)
        if type_name == "string" and parameter_type in ("date", "reference"):
            type_name = "dateTime" if parameter_type == "date" else "canonical"
        elif type_name == "CodeableConcept" and parameter_type == "string":
            type_name = "HumanName"  # a text-only HumanName or Address: its text is its string
        return converter(parameter_type, type_name, local_bases)(code, value)
    return convert
