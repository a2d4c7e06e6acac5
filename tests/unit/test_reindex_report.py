"""The text report of a `$reindex` job: HAPI's layout, rates, per-type blocks and failures."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from service.jobs.report import (
    MAX_LISTED_FAILURES,
    ReindexCounts,
    ReindexFailure,
    TypeCounts,
    changes_per_second,
    format_duration,
    format_start_time,
    render_report,
)

START = datetime(2026, 4, 16, 11, 27, 4, 935_123, tzinfo=timezone.utc)
RULE = "-------------------------------------------------"


def test_the_brief_example() -> None:
    counts = ReindexCounts({"Organization": TypeCounts(changed=32)})
    assert render_report(counts, START, timedelta(milliseconds=412)) == f"""\
Reindex (v3) Report
{RULE}
Start Time                : 2026-04-16 11:27:04.935
Duration                  : 00:00:00.412
Total Resources Changed   : 32 (77/sec)
Total Resources Unchanged : 0
Total Failed Changes      : 0
{RULE}
ResourceType[Organization]
    Changed   : 32
    Unchanged : 0
{RULE}
"""


def test_types_sorted_failures_listed() -> None:
    counts = ReindexCounts({
        "Patient": TypeCounts(changed=3, unchanged=1, failed=1),
        "Organization": TypeCounts(changed=2, unchanged=5),
    })
    failures = [ReindexFailure("Patient", "p1", "bad\nFHIRPath   result")]
    assert render_report(counts, START, timedelta(seconds=2), failures) == f"""\
Reindex (v3) Report
{RULE}
Start Time                : 2026-04-16 11:27:04.935
Duration                  : 00:00:02.000
Total Resources Changed   : 5 (2/sec)
Total Resources Unchanged : 6
Total Failed Changes      : 1
{RULE}
ResourceType[Organization]
    Changed   : 2
    Unchanged : 5
{RULE}
ResourceType[Patient]
    Changed   : 3
    Unchanged : 1
    Failed    : 1
{RULE}
Failures
    Patient/p1: bad FHIRPath result
{RULE}
"""


def test_no_types_at_all() -> None:
    report = render_report(ReindexCounts(), START, timedelta(0))
    assert report.splitlines()[-1] == RULE
    assert "Total Resources Changed   : 0 (0/sec)" in report
    assert "ResourceType[" not in report and "Failures" not in report


def test_at_most_100_failures_are_listed() -> None:
    counts = ReindexCounts({"Patient": TypeCounts(failed=150)})
    failures = [ReindexFailure("Patient", str(number), "boom") for number in range(150)]
    lines = render_report(counts, START, timedelta(seconds=1), failures).splitlines()
    start = lines.index("Failures (first 100 of 150)")
    listed = lines[start + 1:start + 1 + MAX_LISTED_FAILURES]
    assert listed[0] == "    Patient/0: boom" and listed[-1] == "    Patient/99: boom"
    assert lines[start + 1 + MAX_LISTED_FAILURES:] == ["    ... and 50 more not listed", RULE]


def test_counts_beyond_the_stored_failures_are_reported_as_not_listed() -> None:
    counts = ReindexCounts({"Patient": TypeCounts(failed=3)})
    lines = render_report(counts, START, timedelta(seconds=1), [ReindexFailure("Patient", "a", "")]).splitlines()
    assert lines[-4:] == ["Failures (first 1 of 3)", "    Patient/a: (no reason given)",
                          "    ... and 2 more not listed", RULE]


def test_failed_counts_without_any_failure_details() -> None:
    counts = ReindexCounts({"Patient": TypeCounts(failed=2)})
    lines = render_report(counts, START, timedelta(seconds=1)).splitlines()
    assert lines[-3:] == ["Failures", "    ... and 2 more not listed", RULE]


@pytest.mark.parametrize(("changed", "duration", "rate"), [
    (32, timedelta(milliseconds=412), 77),
    (0, timedelta(0), 0),
    (5, timedelta(0), 5000),  # zero counts as 1 ms
    (5, timedelta(microseconds=10), 5000),
    (5, timedelta(seconds=-1), 5000),
    (1000, timedelta(seconds=1), 1000),
    (999, timedelta(seconds=1, microseconds=1), 998),
    (7, timedelta(hours=1), 0),
])
def test_changes_per_second(changed: int, duration: timedelta, rate: int) -> None:
    assert changes_per_second(changed, duration) == rate


@pytest.mark.parametrize(("duration", "text"), [
    (timedelta(0), "00:00:00.000"),
    (timedelta(milliseconds=412, microseconds=999), "00:00:00.412"),
    (timedelta(minutes=4, seconds=3, milliseconds=7), "00:04:03.007"),
    (timedelta(days=1, hours=3), "27:00:00.000"),
    (timedelta(seconds=-5), "00:00:00.000"),
])
def test_format_duration(duration: timedelta, text: str) -> None:
    assert format_duration(duration) == text


@pytest.mark.parametrize(("start", "text"), [
    (START, "2026-04-16 11:27:04.935"),
    (datetime(2026, 4, 16, 13, 27, 4, 935_999, tzinfo=timezone(timedelta(hours=2))), "2026-04-16 11:27:04.935"),
    (datetime(2026, 1, 2, 3, 4, 5), "2026-01-02 03:04:05.000"),
])
def test_format_start_time_in_utc(start: datetime, text: str) -> None:
    assert format_start_time(start) == text


def test_totals() -> None:
    counts = ReindexCounts({"A": TypeCounts(1, 2, 3), "B": TypeCounts(10, 20, 30)})
    assert (counts.changed, counts.unchanged, counts.failed) == (11, 22, 33)
