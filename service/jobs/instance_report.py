"""The `Parameters` answer of instance-level `$reindex` and `$reindex-dryrun`.

It compares a resource's stored index rows with freshly extracted ones and lists every row with the
action a reindex takes on it, in the sections and part names HAPI FHIR uses.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import timedelta
from decimal import Decimal
from html import escape
from typing import Any, Literal, NamedTuple, TypeVar

from service.fhir.instant import format_instant
from service.jobs.report import format_duration
from service.search.rows import (
    DateRow,
    IndexRows,
    NumberRow,
    QuantityRow,
    ReferenceRow,
    Row,
    StringRow,
    TokenRow,
    UriRow,
)

Action = Literal["ADD", "REMOVE", "NO_CHANGE", "UNKNOWN"]
_XHTML_NS = "http://www.w3.org/1999/xhtml"
_MAX_JSON_INT = 2**63
_DAY_MS = 86_400_000
_Item = TypeVar("_Item", Row, str)  # what _compare lists: index rows, or the codes of missing parameters


class _Section(NamedTuple):
    name: str  # the Parameters entry name
    field: str  # the IndexRows field holding its rows
    row_type: str  # the `Type` part
    values: Callable[[Any], list[dict[str, Any]]]  # the type-specific parts of one row


class _Entry(NamedTuple):
    section: _Section
    code: str
    action: Action
    values: list[dict[str, Any]]


def _date_values(row: DateRow) -> list[dict[str, Any]]:
    return [_part("High", "valueInstant", format_instant(row.high)),
            _part("Low", "valueInstant", format_instant(row.low))]


def _number_values(row: NumberRow) -> list[dict[str, Any]]:
    return [_part("Value", "valueDecimal", _json_decimal(row.value))]


def _quantity_values(row: QuantityRow) -> list[dict[str, Any]]:
    return [_part("Value", "valueDecimal", _json_decimal(row.value)), _part("System", "valueUri", row.system),
            _part("Units", "valueCode", row.unit_code or row.unit)]


def _string_values(row: StringRow) -> list[dict[str, Any]]:
    return [_part("ValueNormalized", "valueString", row.normalized), _part("ValueExact", "valueString", row.exact)]


def _token_values(row: TokenRow) -> list[dict[str, Any]]:
    return [_part("System", "valueString", row.system), _part("Value", "valueString", row.value)]


def _uri_values(row: UriRow) -> list[dict[str, Any]]:
    return [_part("Value", "valueUri", row.uri)]


def _reference_values(row: ReferenceRow) -> list[dict[str, Any]]:
    if row.target_type and row.target_id:
        return [_part("TargetId", "valueString", f"{row.target_type}/{row.target_id}")]
    return [_part("TargetUrl", "valueUrl", row.target_url)]


# The order HAPI lists the sections in; the missing-parameter section comes last (built separately).
_SECTIONS = (
    _Section("DateIndexes", "dates", "Date", _date_values),
    _Section("NumberIndexes", "numbers", "Number", _number_values),
    _Section("QuantityIndexes", "quantities", "Quantity", _quantity_values),
    _Section("UriIndexes", "uris", "Uri", _uri_values),
    _Section("StringIndexes", "strings", "String", _string_values),
    _Section("TokenIndexes", "tokens", "Token", _token_values),
    _Section("ResourceLinks", "references", "Reference", _reference_values),
    _Section("CoordinateIndexes", "positions", "Coords", lambda row: [
        _part("Latitude", "valueDecimal", row.latitude), _part("Longitude", "valueDecimal", row.longitude)]),
    # HAPI has no table of composite values (it joins its other tables): a section of this server's own.
    _Section("CompositeIndexes", "composites", "Composite", lambda row: [_part("Value", "valueString", row.parts)]),
)
_MISSING_SECTION = "MissingIndexes"


def instance_reindex_parameters(
    old: IndexRows | None,
    new: IndexRows,
    duration: timedelta,
    dry_run: bool,
    codes: Iterable[str] = (),
    missing_types: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The response `Parameters` for one resource.

    `old` is None when the stored rows are not known; then every new row is `ADD`, or `UNKNOWN` on a
    dry run limited by `codes` (only those parameters were extracted, so nothing can be compared).
    A non-empty `codes` keeps only rows of those search parameter codes, old and new alike.
    `missing_types` maps a missing parameter's code to its `Type` part (`Token`, ...), when the caller knows it.
    """
    wanted = frozenset(codes)
    unknown_old: Action = "UNKNOWN" if dry_run and wanted else "ADD"
    entries = [_Entry(section, row.code, action, section.values(row))
               for section in _SECTIONS
               for row, action in _compare(None if old is None else _kept(old, section.field, wanted),
                                           _kept(new, section.field, wanted), unknown_old)]
    old_missing = None if old is None else _kept_codes(old.missing, wanted)
    missing = _compare(old_missing, _kept_codes(new.missing, wanted), unknown_old)
    parameters = [
        _part("Narrative", "valueString", _narrative(entries, missing)),
        _part("Message", "valueString", _message(duration, dry_run)),
    ]
    for section in _SECTIONS:
        parts = [_entry_part(entry) for entry in entries if entry.section is section]
        if parts:
            parameters.append({"name": section.name, "part": parts})
    if missing:
        types = missing_types or {}
        parts = [_missing_part(code, action, types.get(code)) for code, action in missing]
        parameters.append({"name": _MISSING_SECTION, "part": parts})
    return {"resourceType": "Parameters", "parameter": parameters}


def format_elapsed(duration: timedelta) -> str:
    """HAPI's stopwatch format: `12ms` under 10 s, `00:00:12.345` up to a minute, `01:02:03` under a day,
    then days (`1.5 days`, `12 days`)."""
    milliseconds = max(0, duration // timedelta(milliseconds=1))
    if milliseconds < 10_000:
        return f"{milliseconds}ms"
    if milliseconds >= _DAY_MS:
        days = milliseconds / _DAY_MS
        return f"{days:.0f} days" if days >= 10 else f"{days:.1f} {'day' if milliseconds == _DAY_MS else 'days'}"
    clock = format_duration(timedelta(milliseconds=milliseconds))
    return clock if milliseconds <= 60_000 else clock[:-4]  # milliseconds only while they still matter


def _compare(old: frozenset[_Item] | None, new: frozenset[_Item], unknown_old: Action) -> list[tuple[_Item, Action]]:
    """Each item with its action, in HAPI's order: additions, removals, then unchanged; each group sorted."""
    if old is None:
        groups: list[tuple[Action, frozenset[_Item]]] = [(unknown_old, new)]
    else:
        groups = [("ADD", new - old), ("REMOVE", old - new), ("NO_CHANGE", new & old)]
    return [(item, action) for action, items in groups for item in sorted(items, key=_sort_key)]


def _kept(rows: IndexRows, field: str, wanted: frozenset[str]) -> frozenset[Row]:
    return frozenset(row for row in getattr(rows, field) if not wanted or row.code in wanted)


def _kept_codes(codes: frozenset[str], wanted: frozenset[str]) -> frozenset[str]:
    return codes & wanted if wanted else codes


def _sort_key(item: Row | str) -> tuple[str, ...]:
    """By code, then by the row's values as text: a stable order whatever the set iteration order."""
    return (item,) if isinstance(item, str) else tuple("" if value is None else str(value) for value in item)


def _entry_part(entry: _Entry) -> dict[str, Any]:
    parts = [_part("Action", "valueCode", entry.action), _part("Type", "valueCode", entry.section.row_type)]
    return {"name": entry.code, "part": parts + [value for value in entry.values if value]}


def _missing_part(code: str, action: Action, row_type: str | None) -> dict[str, Any]:
    # IndexRows.missing holds codes only, so `Type` appears only when the caller supplied it.
    parts = [_part("Action", "valueCode", action), _part("Type", "valueCode", row_type),
             _part("Missing", "valueBoolean", True)]
    return {"name": code, "part": [part for part in parts if part]}


def _part(name: str, value_type: str, value: Any) -> dict[str, Any]:
    """One named value, or {} when absent or blank (FHIR has neither null nor empty values); callers drop the {}."""
    return {} if value is None or value == "" else {"name": name, value_type: value}


def _json_decimal(value: Decimal) -> int | float:
    # The JSON encoder takes neither Decimal nor integers past 64 bits; whole numbers within those stay exact.
    if value == value.to_integral_value() and abs(value) < _MAX_JSON_INT:
        return int(value)
    return float(value)


def _message(duration: timedelta, dry_run: bool) -> str:
    if dry_run:
        return f"Reindex dry-run completed in {format_elapsed(duration)}. No changes were committed to any stored data."
    return f"Reindex completed in {format_elapsed(duration)}"


def _narrative(entries: list[_Entry], missing: list[tuple[str, Action]]) -> str:
    """An XHTML table, one row per index row: section, parameter code, action and values."""
    rows = [(entry.section.name, entry.code, entry.action, _values_text(entry.values)) for entry in entries]
    rows += [(_MISSING_SECTION, code, action, "missing") for code, action in missing]
    body = "".join(f"<tr><td>{escape(section)}</td><td>{escape(code)}</td><td>{action}</td><td>{escape(text)}</td></tr>"
                   for section, code, action, text in rows)
    header = "<tr><th>Index</th><th>Parameter</th><th>Action</th><th>Values</th></tr>"
    return f'<div xmlns="{_XHTML_NS}"><h1>Reindex</h1><table border="0">{header}{body}</table></div>'


def _values_text(values: list[dict[str, Any]]) -> str:
    return ", ".join(f"{value['name']}={_only_value(value)}" for value in values if value)


def _only_value(part: dict[str, Any]) -> Any:
    return next(item for key, item in part.items() if key != "name")
