"""Index rows: the typed values a resource contributes to each search parameter.

Rows are NamedTuples (hashable, cheap to build) so a resource's rows can be compared as sets and
written by COPY without conversion. `IndexRows` groups them per index table.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime
from decimal import Decimal
from itertools import chain
from typing import NamedTuple

import orjson
from xxhash import xxh3_64_intdigest

_MASK = (1 << 64) - 1


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


def fingerprint(rows: IndexRows) -> int:
    """A stable signed 64-bit digest of a resource's index rows (a Postgres bigint), the same in every
    process: equal rows give equal fingerprints. It is the sum of a digest per row (and per missing code),
    so it does not depend on row order, and a reindex that re-extracts only some codes moves it by the
    digests of their rows alone (`moved`), without extracting the others."""
    return as_fingerprint(digest_sum(rows))


def as_fingerprint(digest: int) -> int:
    """A digest sum as a fingerprint: the signed 64-bit integer a bigint holds."""
    digest &= _MASK
    return digest - (1 << 64) if digest >> 63 else digest


def moved(index_hash: int, removed: int, added: int) -> int:
    """The fingerprint of a resource's rows after rows of digest sum `removed` were replaced by rows of `added`."""
    return as_fingerprint(index_hash - removed + added)


def digest_sum(rows: IndexRows) -> int:
    """`digest_of` the rows as `flat_rows` gives them."""
    return digest_of(flat_rows(rows))


def flat_rows(rows: IndexRows) -> Iterator[tuple[object, ...]]:
    """Each row as a plain tuple `(code, values...)`, and each missing code as `(code,)`: the form of the rows
    read back from the tables (store/indexes.py `read_stored_rows`)."""
    return chain(map(tuple, rows.all_rows()), ((code,) for code in rows.missing))


def digest_of(rows: Iterable[tuple[object, ...]]) -> int:
    """The sum (mod 2**64) of the rows' digests: xxh3 of each row's JSON array, `(code, values...)`, or `(code,)`
    for a missing code (a row has two fields at least, so the two never meet). A decimal counts with its scale
    (`1.50` is not `1.5`), in the form a numeric column gives back, and a naive instant (an open period's end)
    as the UTC one a timestamptz column gives back, so rows read back from the tables digest alike."""
    return sum(map(row_digest, rows)) & _MASK


def row_digest(row: tuple[object, ...]) -> int:
    """One row's digest, of those `digest_of` sums (mod 2**64)."""
    return xxh3_64_intdigest(orjson.dumps(row, default=_by_value, option=orjson.OPT_NAIVE_UTC))


def _by_value(value: object) -> str:
    if isinstance(value, Decimal):  # positional, as numeric has no exponent; nor has it a negative zero
        return format(value if value else value.copy_abs(), "f")
    raise TypeError(f"{type(value).__name__} is not an index value")
