"""Fingerprints of index rows (stable across processes) and the codes a catalog change makes stale."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal

from service.search.catalog import ChangeLog, build_catalog
from service.search.registry import Registry
from service.search.rows import DateRow, IndexRows, QuantityRow, StringRow, fingerprint

ROWS = IndexRows(strings=(StringRow("name", "acme", "Acme"),),
                 dates=(DateRow("date", datetime(2020, 1, 1, tzinfo=UTC), datetime(2020, 1, 1, 23, tzinfo=UTC)),),
                 quantities=(QuantityRow("value", Decimal("1.50"), "http://unitsofmeasure.org", "mg", "mg"),),
                 missing=frozenset({"a", "b", "c", "d"}))
PRINT_FINGERPRINT = "from tests.unit.test_index_fingerprint import ROWS, fingerprint; print(fingerprint(ROWS))"


def test_the_fingerprint_is_the_same_in_every_process() -> None:
    seeds = []
    for seed in ("1", "2"):  # string hashing (and set order) differs between these processes
        result = subprocess.run([sys.executable, "-c", PRINT_FINGERPRINT], capture_output=True, text=True,
                                env={"PYTHONHASHSEED": seed, "PYTHONPATH": "."}, check=True)
        seeds.append(int(result.stdout))
    assert seeds == [fingerprint(ROWS)] * 2


def test_the_fingerprint_tells_rows_apart() -> None:
    assert fingerprint(ROWS) == fingerprint(IndexRows(*ROWS))
    assert fingerprint(ROWS) != fingerprint(ROWS._replace(strings=(StringRow("name", "acme", "ACME"),)))
    # The scale of a decimal is part of the value (1.50 and 1.5 are different quantities to FHIR).
    changed_scale = (QuantityRow("value", Decimal("1.5"), "http://unitsofmeasure.org", "mg", "mg"),)
    assert fingerprint(ROWS) != fingerprint(ROWS._replace(quantities=changed_scale))
    assert fingerprint(ROWS) != fingerprint(ROWS._replace(missing=frozenset({"a"})))
    assert -2**63 <= fingerprint(ROWS) < 2**63


def test_a_change_makes_only_its_codes_stale_and_only_on_its_types() -> None:
    changes = [(3, "alias", ["Organization"]), (5, "tag", ["Resource"]), (7, "alias", ["Organization"])]
    catalog = build_catalog(Registry.builtin(), ChangeLog(7, changes=changes))
    assert catalog.stale_codes("Organization", 0) == {"alias", "tag"}
    assert catalog.stale_codes("Organization", 5) == {"alias"}
    assert catalog.stale_codes("Organization", 7) == frozenset()
    assert catalog.stale_codes("Patient", 4) == {"tag"}  # Resource covers every type
    assert catalog.stale_codes("Patient", 5) == frozenset()
