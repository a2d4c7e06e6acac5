"""Element values -> index rows, one converter per (search parameter type, FHIR type).

A converter takes the parameter code and one JSON value of a known FHIR type and returns its rows.
`converter(parameter_type, fhir_type)` picks one at compile time, so extraction does no type tests.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from decimal import Decimal
from functools import cache, lru_cache, partial
from typing import Any

from service.fhir.resource_types import RESOURCE_TYPES
from service.search.bindings import implied_systems
from service.search.bounds import ID_LENGTH, STRING_LENGTH, TOKEN_LENGTH, URI_LENGTH, URL_LENGTH, bounded
from service.search.dates import MAX_INSTANT, MIN_INSTANT, REPEATS_CACHED, date_range
from service.search.model import is_a, type_from_suffix
from service.search.near import position_rows
from service.search.rows import (
    DateRow,
    NumberRow,
    QuantityRow,
    ReferenceRow,
    Row,
    StringRow,
    TokenRow,
    UriRow,
)

# The value is parsed JSON of the FHIR type the converter was picked for.
Converter = Callable[[str, Any], tuple[Row, ...]]
# Row constructors from one tuple, without the Python-level NamedTuple.__new__ (the hot path builds
# millions of rows: this saves about 40 % of the cost of each).
new_string_row = partial(tuple.__new__, StringRow)
new_token_row = partial(tuple.__new__, TokenRow)
new_date_row = partial(tuple.__new__, DateRow)
new_number_row = partial(tuple.__new__, NumberRow)
new_quantity_row = partial(tuple.__new__, QuantityRow)
new_uri_row = partial(tuple.__new__, UriRow)
new_reference_row = partial(tuple.__new__, ReferenceRow)
NONE: tuple[Row, ...] = ()
STRING_TYPES = frozenset("string markdown code id uri url canonical oid uuid System.String".split())
NUMBER_TYPES = frozenset("decimal integer positiveInt unsignedInt".split())
DATE_TYPES = frozenset("date dateTime instant".split())
QUANTITY_TYPES = frozenset("Quantity Age Duration Count Distance SimpleQuantity MoneyQuantity".split())
HUMAN_NAME_PARTS = ("family", "given", "prefix", "suffix", "text")  # as HAPI
ADDRESS_PARTS = ("line", "city", "district", "state", "postalCode", "country")  # as HAPI: not `text`
CURRENCY_SYSTEM = "urn:iso:std:iso:4217"
def normalize(text: str) -> str:
    """Lower case without accents (NFD, combining marks dropped): the default string match."""
    if text.isascii():
        return text.lower()
    decomposed = unicodedata.normalize("NFD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).lower()


def decimal(number: object) -> Decimal | None:
    """JSON numbers as Decimal; floats through their shortest repr, so 0.1 stays 0.1."""
    if type(number) is bool or not isinstance(number, (int, float, Decimal)):
        return None
    try:
        return Decimal(repr(number)) if type(number) is float else Decimal(number)
    except ArithmeticError:
        return None


def string_row(code: str, text: str) -> Row:
    """The row of a non-empty string: its bounded prefix, normalized and as written."""
    text = text[:STRING_LENGTH]
    return new_string_row((code, text.lower() if text.isascii() else normalize(text)[:STRING_LENGTH], text))


def string_rows(code: str, value: Any) -> tuple[Row, ...]:
    return (string_row(code, value),) if value and value.__class__ is str else NONE


def parts_rows(parts: tuple[str, ...]) -> Converter:
    """Strings of a HumanName or Address: every listed component, repeated ones included."""
    def convert(code: str, value: dict[str, Any]) -> tuple[Row, ...]:
        rows = []
        for part in parts:
            item = value.get(part)
            if item is None:
                continue
            for text in item if item.__class__ is list else (item,):
                if text and text.__class__ is str:
                    rows.append(string_row(code, text))
        return tuple(rows)
    return convert


def plain_token(code: str, value: object) -> tuple[Row, ...]:
    if type(value) is bool:
        return (new_token_row((code, None, "true" if value else "false", None)),)
    return (new_token_row((code, None, bounded(value, TOKEN_LENGTH), None)),) if type(value) is str and value else NONE


def token_row(code: str, system: Any, value: Any, text: Any) -> Row:
    """A token row of bounded values (each is a string or None in a valid resource)."""
    if len(system or "") + len(value or "") + len(text or "") > TOKEN_LENGTH:  # rare: one may be long
        system, value, text = bounded(system, TOKEN_LENGTH), bounded(value, TOKEN_LENGTH), bounded(text, TOKEN_LENGTH)
    return new_token_row((code, system, value, text))


@cache
def bound_code_token(path: str) -> Converter:
    """A `code` element with a required binding: each code of its value set with its code system (HAPI
    indexes such an element as an enumeration), any other code without one."""
    systems = implied_systems(path) or {}

    def convert(code: str, value: object) -> tuple[Row, ...]:
        if type(value) is str and value:
            return (new_token_row((code, systems.get(value), bounded(value, TOKEN_LENGTH), None)),)
        return NONE
    return convert


def coding_token(code: str, coding: dict[str, Any]) -> tuple[Row, ...]:
    value = coding.get("code")
    return (token_row(code, coding.get("system"), value, coding.get("display")),) if value else NONE


def codeable_concept_tokens(code: str, concept: dict[str, Any]) -> tuple[Row, ...]:
    """One row per coding; the concept's text gets a row of its own (for `:text`)."""
    rows = []
    for coding in concept.get("coding", NONE):
        value = coding.get("code")
        if value:  # a coding without a code has nothing to match
            rows.append(token_row(code, coding.get("system"), value, coding.get("display")))
    text = concept.get("text")
    if text:
        rows.append(new_token_row((code, None, None, bounded(text, TOKEN_LENGTH))))
    return tuple(rows)


def identifier_token(code: str, identifier: dict[str, Any]) -> tuple[Row, ...]:
    value = identifier.get("value")
    if not value:
        return NONE
    type_text = (identifier.get("type") or {}).get("text")
    return (token_row(code, identifier.get("system"), value, type_text),)


def contact_point_token(code: str, contact: dict[str, Any]) -> tuple[Row, ...]:
    """ContactPoint.system (phone, email...) as the token system, as HAPI does."""
    value = contact.get("value")
    return (token_row(code, contact.get("system"), value, None),) if value else NONE


def date_rows(code: str, value: object) -> tuple[Row, ...]:
    bounds = date_range(value) if type(value) is str else None
    return (new_date_row((code, *bounds)),) if bounds else NONE


def period_rows(code: str, period: dict[str, Any]) -> tuple[Row, ...]:
    """Open ends become the minimum/maximum instant; a Period with neither end gives no row."""
    start, end = date_range(period.get("start") or ""), date_range(period.get("end") or "")
    if not start and not end:
        return NONE
    return (new_date_row((code, start[0] if start else MIN_INSTANT, end[1] if end else MAX_INSTANT)),)


def timing_rows(code: str, timing: dict[str, Any]) -> tuple[Row, ...]:
    """Each event, and repeat.boundsPeriod (a boundsDuration/Range is not a date)."""
    rows = [row for event in timing.get("event", ()) for row in date_rows(code, event)]
    bounds = (timing.get("repeat") or {}).get("boundsPeriod")
    return tuple(rows) + (period_rows(code, bounds) if bounds else NONE)


def number_rows(code: str, value: object) -> tuple[Row, ...]:
    number = decimal(value)
    return (new_number_row((code, number)),) if number is not None else NONE


def quantity_rows(code: str, quantity: dict[str, Any]) -> tuple[Row, ...]:
    value = decimal(quantity.get("value"))
    if value is None:
        return NONE
    system, unit_code, unit = quantity.get("system"), quantity.get("code"), quantity.get("unit")
    return (new_quantity_row((code, value, bounded(system, TOKEN_LENGTH), bounded(unit_code, TOKEN_LENGTH),
                              bounded(unit, TOKEN_LENGTH))),)


def money_rows(code: str, money: dict[str, Any]) -> tuple[Row, ...]:
    value, currency = decimal(money.get("value")), money.get("currency")
    if value is None:
        return NONE
    return (new_quantity_row((code, value, CURRENCY_SYSTEM if currency else None, bounded(currency, TOKEN_LENGTH),
                              None)),)


def range_rows(bound_rows: Converter) -> Converter:
    """A Range gives its low and its high bound as two values (as HAPI), not an interval."""
    def convert(code: str, value: dict[str, Any]) -> tuple[Row, ...]:
        return tuple(row for bound in ("low", "high") if bound in value
                     for row in bound_rows(code, value[bound]))
    return convert


def uri_rows(code: str, value: object) -> tuple[Row, ...]:
    return (new_uri_row((code, bounded(value, URI_LENGTH))),) if type(value) is str and value else NONE


@lru_cache(maxsize=REPEATS_CACHED)  # the same subject, encounter, practitioner recur in neighbours
def reference_target(reference: str) -> tuple[str | None, str | None, str | None] | None:
    """(type, id, absolute URL) that a literal reference names, or None (contained, urn:, conditional,
    invalid). An absolute URL keeps the URL, and also gives type and id when it ends in `Type/id`.
    """
    if not reference or reference[0] == "#" or reference.startswith("urn:") or "?" in reference:
        return None
    parts = reference.split("/")
    if len(parts) >= 4 and parts[-2] == "_history":
        parts = parts[:-2]
    typed = len(parts) >= 2 and parts[-2] in RESOURCE_TYPES and 0 < len(parts[-1]) <= ID_LENGTH
    if "://" in reference:
        return (parts[-2], parts[-1], "/".join(parts)) if typed else (None, None, "/".join(parts))
    return (parts[-2], parts[-1], None) if typed and len(parts) == 2 else None


def base_of(url: str) -> str:
    """The service base of an absolute `base/Type/id` URL (version already dropped)."""
    return url.rsplit("/", 2)[0]


@cache
def reference_rows(local_bases: tuple[str, ...]) -> Converter:
    """A literal reference as a row: `Type/id` (version dropped) when it is relative or an absolute URL on
    one of `local_bases` (this service's bases); any other absolute URL by its URL only, as HAPI indexes
    an external reference. An identifier-only, contained or `urn:` reference gives none."""
    def convert(code: str, reference: dict[str, Any]) -> tuple[Row, ...]:
        text = reference.get("reference")
        target = reference_target(text) if text.__class__ is str else None
        if target is None:
            return NONE
        url = target[2]
        if url is not None:
            local = target[0] and base_of(url) in local_bases
            target = (target[0], target[1], None) if local else (None, None, bounded(url, URL_LENGTH))
        return (new_reference_row((code, *target)),)
    return convert


def canonical_rows(code: str, value: object) -> tuple[Row, ...]:
    if type(value) is not str or not value:
        return NONE
    return (new_reference_row((code, None, None, bounded(value, URL_LENGTH))),)


def extension_rows(parameter_type: str, local_bases: tuple[str, ...]) -> Converter:
    """Extensions index their value[x], unwrapped, as HAPI does."""
    def convert(code: str, extension: dict[str, Any]) -> tuple[Row, ...]:
        for key, value in extension.items():
            if key.startswith("value") and len(key) > 5:
                return converter(parameter_type, type_from_suffix(key[5:]), local_bases)(code, value)
        return NONE
    return convert


def no_rows(code: str, value: object) -> tuple[Row, ...]:
    return NONE


COMPLEX_CONVERTERS: dict[tuple[str, str], Converter] = {
    ("string", "HumanName"): parts_rows(HUMAN_NAME_PARTS),
    ("string", "Address"): parts_rows(ADDRESS_PARTS),
    ("token", "boolean"): plain_token,
    ("token", "Coding"): coding_token,
    ("token", "CodeableConcept"): codeable_concept_tokens,
    ("token", "Identifier"): identifier_token,
    ("token", "ContactPoint"): contact_point_token,
    ("date", "Period"): period_rows,
    ("date", "Timing"): timing_rows,
    ("number", "Range"): range_rows(number_rows),
    ("quantity", "Money"): money_rows,
    ("quantity", "Range"): range_rows(quantity_rows),
}
PRIMITIVE_CONVERTERS: dict[str, tuple[frozenset[str], Converter]] = {
    "string": (STRING_TYPES, string_rows),
    "token": (STRING_TYPES, plain_token),
    "date": (DATE_TYPES, date_rows),
    "number": (NUMBER_TYPES, number_rows),
    "uri": (STRING_TYPES, uri_rows),
    "reference": (frozenset({"canonical", "uri", "url"}), canonical_rows),
}


def element_converter(parameter_type: str, fhir_type: str, path: str, local_bases: tuple[str, ...]) -> Converter:
    """`converter`, for the element at a known definition path: a bound `code` token gets its system."""
    if parameter_type == "token" and fhir_type == "code" and implied_systems(path):
        return bound_code_token(path)
    if parameter_type == "special":  # `near`, the one special parameter indexed (definitions.py)
        return position_rows
    return converter(parameter_type, fhir_type, local_bases)


@cache
def converter(parameter_type: str, fhir_type: str, local_bases: tuple[str, ...] = ()) -> Converter:
    """The converter for values of `fhir_type` in a parameter of `parameter_type` (no_rows if none);
    `local_bases` are this service's base URLs, for references."""
    if (parameter_type, fhir_type) in COMPLEX_CONVERTERS:
        return COMPLEX_CONVERTERS[parameter_type, fhir_type]
    if (parameter_type, fhir_type) == ("reference", "Reference"):
        return reference_rows(local_bases)
    if fhir_type == "Extension":
        return extension_rows(parameter_type, local_bases)
    types, primitive = PRIMITIVE_CONVERTERS.get(parameter_type, (frozenset(), no_rows))
    if fhir_type in types:
        return primitive
    if parameter_type == "quantity" and any(is_a(fhir_type, q) for q in QUANTITY_TYPES):
        return quantity_rows
    return no_rows
