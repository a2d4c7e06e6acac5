"""Search values: one parsed alternative of a parameter, per parameter type.

A parameter's query value is split on unescaped commas (OR); each part becomes one of the value
classes below. Query values are normalised and bounded like index rows (service/search/values.py and
bounds.py), so they compare with the stored columns directly: a value longer than the indexed prefix
matches on that prefix (`:contains` excepted: it looks within the prefix only).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal, InvalidOperation

from service.fhir.errors import invalid
from service.fhir.resource_types import RESOURCE_TYPES
from service.search.bounds import STRING_LENGTH, TOKEN_LENGTH, URI_LENGTH, URL_LENGTH, bounded
from service.search.dates import date_range
from service.search.near import NearMatch
from service.search.values import base_of, normalize, reference_target

PREFIXES = frozenset({"eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"})
APPROXIMATE_SHARE = Decimal("0.1")  # `ap`: within 10 %
# Search numbers have at most this many digits before and after the point: far beyond any measured value,
# and well inside what PostgreSQL's numeric holds (and Python's decimal context computes) for the bounds.
NUMBER_DIGITS = 1000


@dataclass(frozen=True, slots=True)
class StringMatch:
    mode: str  # "prefix" (on normalized), "exact" (on exact), "contains" (on normalized), "text" (full text)
    text: str


@dataclass(frozen=True, slots=True)
class TokenMatch:
    code: str | None  # None: any code (`system|`)
    system: str | None
    system_rule: str  # "any" (no `|`), "none" (`|code`), "equal" (`system|...`)


@dataclass(frozen=True, slots=True)
class TokenText:
    text: str  # `:text`: case-insensitive starts-with on display/text


@dataclass(frozen=True, slots=True)
class ReferenceMatch:
    target_types: tuple[str, ...]  # empty: any type
    target_id: str | None
    url: str | None  # an absolute URL matched as stored (with a target_id as well: either one matches)


@dataclass(frozen=True, slots=True)
class DateMatch:
    prefix: str
    low: datetime  # the query value's own range, inclusive
    high: datetime


@dataclass(frozen=True, slots=True)
class NumberMatch:
    prefix: str
    value: Decimal
    low: Decimal  # implicit precision range [low, high) of the value, for eq/ne
    high: Decimal


@dataclass(frozen=True, slots=True)
class QuantityMatch:
    number: NumberMatch
    system: str | None
    code: str | None  # with no system: matches the unit code or the unit text


@dataclass(frozen=True, slots=True)
class UriMatch:
    mode: str  # "exact", "below" (stored starts with value), "above" (value starts with stored)
    uri: str


@dataclass(frozen=True, slots=True)
class MissingMatch:
    missing: bool


@dataclass(frozen=True, slots=True)
class CompositeMatch:
    parts: tuple[tuple[str, ComponentValue], ...]  # (component parameter type, its value), in component order


ComponentValue = StringMatch | TokenMatch | ReferenceMatch | DateMatch | NumberMatch | QuantityMatch | UriMatch
QueryValue = (StringMatch | TokenMatch | TokenText | ReferenceMatch | DateMatch | NumberMatch | QuantityMatch
              | UriMatch | MissingMatch | CompositeMatch | NearMatch)


def split_unescaped(text: str, separator: str) -> list[str]:
    """Split on `separator` unless escaped with a backslash; escapes are kept for the next split."""
    parts, current, escaped = [], [], False
    for char in text:
        if escaped:
            current.append("\\" + char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == separator:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current) + ("\\" if escaped else ""))
    return parts


def unescape(text: str) -> str:
    for escaped in ("\\,", "\\|", "\\$"):
        text = text.replace(escaped, escaped[1])
    return text.replace("\\\\", "\\")


def split_prefix(text: str) -> tuple[str, str]:
    if text[:2] in PREFIXES and len(text) > 2:
        return text[:2], text[2:]
    return "eq", text


def parse_string(text: str, modifier: str | None) -> StringMatch:
    text = unescape(text)
    if modifier == "exact":
        return StringMatch("exact", bounded(text, STRING_LENGTH))
    if modifier == "contains":
        return StringMatch("contains", normalize(text))
    return StringMatch(modifier or "prefix", bounded(normalize(bounded(text, STRING_LENGTH)), STRING_LENGTH))


def parse_token(text: str, modifier: str | None) -> TokenMatch | TokenText:
    if modifier == "text":
        return TokenText(bounded(unescape(text), TOKEN_LENGTH))
    parts = split_unescaped(text, "|")
    if len(parts) > 2:
        raise invalid(f"Invalid token '{text[:40]}': expected [system|]code")
    if len(parts) == 1:
        return TokenMatch(bounded(unescape(parts[0]), TOKEN_LENGTH), None, "any")
    system, code = bounded(unescape(parts[0]), TOKEN_LENGTH), bounded(unescape(parts[1]), TOKEN_LENGTH) or None
    if not system:
        if code is None:
            raise invalid(f"Invalid token '{text}': neither a system nor a code")
        return TokenMatch(code, None, "none")
    return TokenMatch(code, system, "equal")


def parse_reference(text: str, type_modifier: str | None, targets: tuple[str, ...], local_bases: tuple[str, ...],
                    request_base: str) -> ReferenceMatch:
    """`Type/id`, `id` or an absolute URL. A URL on a local base is `Type/id`, as references to it are indexed;
    one on the base this request came in on (when not configured as local) matches as `Type/id` and as the
    URL, since the references indexed before could have been written either way; any other URL as stored."""
    text, url = unescape(text), None
    if "://" in text:
        type_name, _, url = reference_target(text) or (None, None, text)
        base = base_of(url) if type_name and url else None
        if base is None or (base not in local_bases and base != request_base):
            return ReferenceMatch((), None, bounded(url, URL_LENGTH))
        text, url = text[len(base) + 1:], (None if base in local_bases else bounded(url, URL_LENGTH))
    parts = text.split("/")
    if len(parts) == 4 and parts[2] == "_history":
        parts = parts[:2]
    if len(parts) == 1 and parts[0]:
        types = (type_modifier,) if type_modifier else targets
        return ReferenceMatch(types, parts[0], None)
    if len(parts) != 2 or parts[0] not in RESOURCE_TYPES or not parts[1]:
        raise invalid(f"Invalid reference '{text}': expected Type/id, id or an absolute URL")
    if type_modifier and parts[0] != type_modifier:
        raise invalid(f"Reference '{text}' contradicts the modifier :{type_modifier}")
    if targets and parts[0] not in targets:
        raise invalid(f"Reference '{text}': this parameter refers to {', '.join(targets)} only")
    return ReferenceMatch((parts[0],), parts[1], url)


def parse_date(text: str, now: datetime) -> DateMatch:
    prefix, value = split_prefix(text)
    bounds = date_range(value.replace(" ", "+"))  # an unencoded '+' of an offset arrives as a space
    if bounds is None:
        raise invalid(f"Invalid date '{text}': expected [prefix]YYYY[-MM[-DD[Thh:mm[:ss[.s]][zone]]]]")
    low, high = bounds
    if prefix == "ap":
        margin = abs(now - (low + (high - low) / 2)) / 10
        try:
            low, high = low - margin, high + margin
        except OverflowError:
            raise invalid(f"Invalid date '{text}': its approximate range (ap) reaches beyond the years 0001 to "
                          "9999") from None
    return DateMatch(prefix, low, high)


def parse_number(text: str) -> NumberMatch:
    prefix, value = split_prefix(text)
    try:
        number = Decimal(value)
    except InvalidOperation:
        raise invalid(f"Invalid number '{text}': expected [prefix]decimal") from None
    if not number.is_finite():
        raise invalid(f"Invalid number '{text}': expected a finite decimal")
    if not searchable(number):
        raise invalid(f"Invalid number '{text[:40]}': search numbers have at most {NUMBER_DIGITS} digits before "
                      f"and after the decimal point")
    if prefix == "ap":
        margin = abs(number) * APPROXIMATE_SHARE
    else:
        exponent = number.as_tuple().exponent
        assert isinstance(exponent, int)  # not 'n', 'N' or 'F': the number is finite
        margin = Decimal(5).scaleb(exponent - 1)  # half a unit of the last digit
    return NumberMatch(prefix, number, number - margin, number + margin)


def searchable(number: Decimal) -> bool:
    """A finite number within NUMBER_DIGITS digits before and after the point."""
    exponent = number.as_tuple().exponent  # 'n', 'N' or 'F' for the non-finite ones
    return isinstance(exponent, int) and number.adjusted() < NUMBER_DIGITS and -exponent <= NUMBER_DIGITS


def parse_quantity(text: str) -> QuantityMatch:
    parts = [unescape(part) for part in split_unescaped(text, "|")]
    if len(parts) not in (1, 3):
        raise invalid(f"Invalid quantity '{text}': expected [prefix]value[|system|code]")
    number = parse_number(parts[0])
    if len(parts) == 1:
        return QuantityMatch(number, None, None)
    return QuantityMatch(number, bounded(parts[1], TOKEN_LENGTH) or None, bounded(parts[2], TOKEN_LENGTH) or None)


def parse_uri(text: str, modifier: str | None) -> UriMatch:
    return UriMatch(modifier or "exact", bounded(unescape(text), URI_LENGTH))


def parse_missing(text: str) -> MissingMatch:
    if text not in ("true", "false"):
        raise invalid(f"Invalid :missing value '{text}': expected true or false")
    return MissingMatch(text == "true")


def uri_ancestors(uri: str) -> list[str]:
    """`:above`: the URI itself and every prefix ending at a path separator, with and without it."""
    found = [uri]
    for position, char in enumerate(uri):
        if char == "/" and position > uri.find("://") + 2:
            found += [uri[:position], uri[:position + 1]]
    return found
