"""The extractor's version: one readable number, ordered by code version then Unicode version, and pinned
to the definitions files it was set for."""

from __future__ import annotations

from collections import Counter

from service.jobs.stored_rows import Difference, difference
from service.search.extractor import DEFINITIONS_DIGEST, Extractor, current, definitions_digest, is_stale

MINE = Extractor(3, 150100, 123456789)


def test_the_number_reads_in_decimal_and_back() -> None:
    assert MINE.number == 3_150100_123456789
    assert Extractor.of(MINE.number) == MINE
    assert str(MINE) == "extraction 3, Unicode 15.1.0, definitions 123456789"


def test_only_older_or_unknown_extractors_are_stale() -> None:
    assert is_stale(None, MINE)  # written by a release that did not record it
    assert is_stale(Extractor(2, 160000, 5).number, MINE)  # older code, whatever its Unicode
    assert is_stale(Extractor(3, 150000, 123456789).number, MINE)  # older Unicode
    assert is_stale(Extractor(3, 150100, 5).number, MINE)  # same age, other definitions: unknown
    assert not is_stale(MINE.number, MINE)
    assert not is_stale(Extractor(4, 140000, 5).number, MINE)  # newer code: its replicas keep it
    assert not is_stale(Extractor(3, 160000, 5).number, MINE)


def test_the_definitions_files_are_those_the_extraction_version_was_set_for() -> None:
    # When this fails, the definitions changed: bump EXTRACTION_VERSION and pin the new digest.
    assert definitions_digest() == DEFINITIONS_DIGEST
    assert current().definitions == DEFINITIONS_DIGEST


def test_a_difference_counts_missing_and_stray_rows_per_parameter() -> None:
    fresh = Counter({("name", "acme", "Acme"): 1, ("active", None, "true", None): 1})
    stored = Counter({("name", "acne", "Acne"): 1, ("active", None, "true", None): 1, ("?99",): 1})
    assert difference("o1", fresh, Counter(fresh)) is None
    assert difference("o1", fresh, stored) == Difference("o1", {"name": (1, 1), "?99": (0, 1)})
