"""The plain-text report of a `$reindex` job, in the shape HAPI FHIR's "Reindex (v3) Report" has."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

RULE = "-" * 49
MAX_LISTED_FAILURES = 100
_LABEL_WIDTH = 26  # "Total Resources Unchanged " : every header label is padded to this width


@dataclass(frozen=True, slots=True)
class TypeCounts:
    changed: int = 0
    unchanged: int = 0
    failed: int = 0


@dataclass(frozen=True, slots=True)
class ReindexCounts:
    """Per resource type outcome counts of one job."""

    by_type: Mapping[str, TypeCounts] = field(default_factory=dict)

    @property
    def changed(self) -> int:
        return sum(counts.changed for counts in self.by_type.values())

    @property
    def unchanged(self) -> int:
        return sum(counts.unchanged for counts in self.by_type.values())

    @property
    def failed(self) -> int:
        return sum(counts.failed for counts in self.by_type.values())


@dataclass(frozen=True, slots=True)
class ReindexFailure:
    resource_type: str
    resource_id: str
    reason: str


def render_report(
    counts: ReindexCounts, start: datetime, duration: timedelta, failures: Sequence[ReindexFailure] = (),
    notes: Sequence[str] = (),
) -> str:
    """The report text, newline-terminated. `failures` may be capped by the caller; `counts` has the totals.
    `notes` (ours, not HAPI's: what a sweep or a verification found) end it, one line each."""
    lines = [
        "Reindex (v3) Report",
        RULE,
        _header("Start Time", format_start_time(start)),
        _header("Duration", format_duration(duration)),
        _header("Total Resources Changed", f"{counts.changed} ({changes_per_second(counts.changed, duration)}/sec)"),
        _header("Total Resources Unchanged", str(counts.unchanged)),
        _header("Total Failed Changes", str(counts.failed)),
        RULE,
    ]
    for resource_type in sorted(counts.by_type):
        lines += _type_block(resource_type, counts.by_type[resource_type])
    if failures or counts.failed:
        lines += _failure_block(failures, max(counts.failed, len(failures)))
    if notes:
        lines += [*notes, RULE]
    return "\n".join(lines) + "\n"


def format_start_time(start: datetime) -> str:
    """UTC with milliseconds, e.g. `2026-04-16 11:27:04.935`; a naive time is taken as UTC."""
    utc = start.astimezone(timezone.utc) if start.tzinfo else start
    return utc.strftime("%Y-%m-%d %H:%M:%S.") + f"{utc.microsecond // 1000:03d}"


def format_duration(duration: timedelta) -> str:
    """`HH:MM:SS.mmm`; hours keep counting past a day (`27:00:00.000`), negatives read as zero."""
    milliseconds = max(0, duration // timedelta(milliseconds=1))
    seconds, milliseconds = divmod(milliseconds, 1000)
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}.{milliseconds:03d}"


def changes_per_second(changed: int, duration: timedelta) -> int:
    """Whole changes per second, rounded down; a duration under 1 ms counts as 1 ms (no division by zero)."""
    microseconds = max(duration // timedelta(microseconds=1), 1000)
    return changed * 1_000_000 // microseconds


def _header(label: str, value: str) -> str:
    return f"{label:<{_LABEL_WIDTH}}: {value}"


def _type_block(resource_type: str, counts: TypeCounts) -> list[str]:
    lines = [f"ResourceType[{resource_type}]", f"    Changed   : {counts.changed}",
             f"    Unchanged : {counts.unchanged}"]
    if counts.failed:
        lines.append(f"    Failed    : {counts.failed}")
    return [*lines, RULE]


def _failure_block(failures: Sequence[ReindexFailure], total_failed: int) -> list[str]:
    listed = failures[:MAX_LISTED_FAILURES]
    partial = 0 < len(listed) < total_failed
    lines = [f"Failures (first {len(listed)} of {total_failed})" if partial else "Failures"]
    lines += [f"    {failure.resource_type}/{failure.resource_id}: {_one_line(failure.reason)}" for failure in listed]
    if total_failed > len(listed):
        lines.append(f"    ... and {total_failed - len(listed)} more not listed")
    return [*lines, RULE]


def _one_line(reason: str) -> str:
    # A stack trace or multi-line message would break the report's one-failure-per-line layout.
    return " ".join(reason.split()) or "(no reason given)"
