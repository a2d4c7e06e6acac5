"""Index rows: the typed values a resource contributes to each search parameter.

Rows are NamedTuples (hashable, cheap to build) so a resource's rows can be compared as sets and
written by COPY without conversion. `IndexRows` groups them per index table.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from decimal import Decimal
from itertools import chain
from typing import NamedTuple

import orjson


class StringRow(NamedTuple):
    code: str
    normalized: str  # lower-cased, accents removed: the default (prefix) match
    exact: str  # the value as written: `:exact`


class TokenRow(NamedTuple):
    code: str
    system: str | None
    value: str | None
    text: str | None  # Coding.display, CodeableConcept.text or Identifier.type.text, for `:text`


class DateRow(NamedTuple):
    code: str
    low: datetime  # UTC, tz-aware, inclusive
    high: datetime  # UTC, tz-aware, inclusive (last microsecond of the value's precision)


class NumberRow(NamedTuple):
    code: str
    value: Decimal


class QuantityRow(NamedTuple):
    code: str
    value: Decimal
    system: str | None
    unit_code: str | None
    unit: str | None


class UriRow(NamedTuple):
    code: str
    uri: str


class ReferenceRow(NamedTuple):
    code: str
    target_type: str | None
    target_id: str | None
    target_url: str | None  # absolute or canonical URL, version (`_history/n`) dropped


class PositionRow(NamedTuple):
    code: str
    latitude: float  # degrees
    longitude: float


class CompositeRow(NamedTuple):
    code: str
    parts: str  # a JSON array: per component, the fields of its row (after `code`) by name


# Any one row: converters and the extraction sinks hold rows before IndexRows groups them per table.
Row = StringRow | TokenRow | DateRow | NumberRow | QuantityRow | UriRow | ReferenceRow | PositionRow


class IndexRows(NamedTuple):
    """All index rows of one resource, deduplicated (a NamedTuple: built once per resource, cheaply)."""

    strings: tuple[StringRow, ...] = ()
    tokens: tuple[TokenRow, ...] = ()
    dates: tuple[DateRow, ...] = ()
    numbers: tuple[NumberRow, ...] = ()
    quantities: tuple[QuantityRow, ...] = ()
    uris: tuple[UriRow, ...] = ()
    references: tuple[ReferenceRow, ...] = ()
    positions: tuple[PositionRow, ...] = ()
    composites: tuple[CompositeRow, ...] = ()
    missing: frozenset[str] = frozenset()  # applicable codes without any row (`:missing`)

    def tables(self) -> tuple[tuple[Row | CompositeRow, ...], ...]:
        """The row tuples of the nine value tables, in field order (`missing` is not one of them)."""
        return (self.strings, self.tokens, self.dates, self.numbers, self.quantities, self.uris, self.references,
                self.positions, self.composites)

    def all_rows(self) -> tuple[Row | CompositeRow, ...]:
        """Every row of every type, in the field order above."""
        return (*self.strings, *self.tokens, *self.dates, *self.numbers, *self.quantities, *self.uris,
                *self.references, *self.positions, *self.composites)


def only_codes(rows: IndexRows, codes: frozenset[str]) -> IndexRows:
    """The rows of these codes only."""
    return IndexRows._make((*(tuple(row for row in table if row[0] in codes) for table in rows.tables()),
                            rows.missing & codes))


def fingerprint(rows: IndexRows) -> int:
    """A stable signed 64-bit digest of a resource's index rows (a Postgres bigint), the same in every
    process: equal rows give equal fingerprints, so a reindex can tell changed rows without reading
    the stored ones back. Row order counts (extraction is deterministic); the missing codes are sorted."""
    # Without position and composite rows, the seven first tables alone: the fingerprints of the resources that
    # have none stay what they were before those were indexed, so a reindex after the upgrade rewrites fewer.
    tables = rows.tables() if rows.positions or rows.composites else rows.tables()[:7]
    # Flat: each table's length, then every field of every row (a table's rows all have the same fields,
    # so this reads back unambiguously), then the missing codes. Decimal goes through `str`, keeping its scale.
    values = [*map(len, tables), *chain.from_iterable(chain.from_iterable(tables)), *sorted(rows.missing)]
    digest = hashlib.blake2b(orjson.dumps(values, default=str), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)
