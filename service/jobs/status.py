"""Responses of the `$reindex` job endpoints (start, poll, cancel) as (HTTP status, JSON body, headers).

The texts, severities and codes follow HAPI FHIR 8.6.5, so HAPI clients and people reading its
output see what they know; additions (ETA, Retry-After, cancel, throttle) come after or beside HAPI's text.
A paused job, a state HAPI does not have, is polled as a running one is (202, as it has not ended), with a
text of its own that keeps HAPI's `$reindex job has` opening and `Overall progress: N%`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from service.fhir.bundle import bundle
from service.fhir.outcome import Issue, operation_outcome

if TYPE_CHECKING:  # the repository and the controls import this module's states
    from service.jobs.control import ControlledJob, JobControl
    from service.jobs.repository import JobProgress

JobState = Literal["queued", "in_progress", "finalizing", "completed", "failed", "cancelled"]
EndState = Literal["completed", "failed", "cancelled"]  # the states a job ends in
RUNNING_STATES: frozenset[str] = frozenset({"queued", "in_progress", "finalizing"})
Response = tuple[int, dict[str, Any], dict[str, str]]

PREFER_ASYNC_WARNING = "This method should be invoked with the Prefer: respond-async header. Proceeding anyway."
MAX_RETRY_AFTER_SECONDS = 10  # a poll at least every 10 s keeps a finished job from looking stuck


@dataclass(frozen=True, slots=True)
class JobStatus:
    """A snapshot of one job, as read from the store."""

    state: JobState
    processed: int = 0
    total: int | None = None  # estimated resources to visit; None until planned
    rate: float | None = None  # resources per second so far
    seconds_left: float | None = None  # estimated time to completion
    error: str | None = None  # why a failed job failed
    report: str | None = None  # the text report of an ended job
    paused: bool = False  # a running job whose workers stay away until it is resumed
    throttle: int | None = None  # resources per second over all workers; None: unthrottled

    @property
    def percent(self) -> int:
        """Whole percent done, rounded down, 0..100; 0 while the total is unknown."""
        if not self.total:
            return 0
        return max(0, min(100, self.processed * 100 // self.total))


def job_status(progress: JobProgress) -> JobStatus:
    """The status of a job as read from the store, with its rate and time left once it has processed some
    (the time left at its throttle, when that is below the rate so far)."""
    rate = left = None
    if progress.elapsed_seconds and progress.processed:
        rate = progress.processed / progress.elapsed_seconds
        left = max(progress.total - progress.processed, 0) / min(rate, progress.throttle_rate or rate)
    return JobStatus(progress.state, progress.processed, progress.total, rate, left,
                     progress.error, progress.report, progress.paused, progress.throttle_rate)


def accepted_response(poll_url: str, prefer_async: bool) -> Response:
    """202 of `POST $reindex` for a new job (the seed's exchange)."""
    issues = [_information(f"$reindex job has been accepted. Poll for status at the following URL: {poll_url}")]
    return 202, operation_outcome(*issues, *_prefer_warning(prefer_async)), {"Content-Location": poll_url}


def already_running_response(poll_url: str, prefer_async: bool) -> Response:
    """202 of `POST $reindex` when an identical job is queued or running: its location, no new job.

    The first issue is the usual acceptance text, so a client reading the poll URL from it still works.
    """
    issues = [
        _information(f"$reindex job has been accepted. Poll for status at the following URL: {poll_url}"),
        _information("An identical $reindex job is already queued or in progress; "
                     "no new job was created and the URL above is that job's."),
    ]
    return 202, operation_outcome(*issues, *_prefer_warning(prefer_async)), {"Content-Location": poll_url}


def progress_text(status: JobStatus) -> str:
    """The `X-Progress` header value of a job in this state."""
    if status.paused and status.state in RUNNING_STATES:
        return f"$reindex job has been paused Overall progress: {status.percent}%.{_details(status)}"
    match status.state:
        case "queued":
            return "$reindex job has not yet started"
        case "in_progress":
            return f"$reindex job has started and is in progress Overall progress: {status.percent}%.{_details(status)}"
        case "finalizing":
            return "$reindex job has completed main processing and is being finalized."
        case "completed":
            return "$reindex job has completed successfully"
        case "failed":
            return f"$reindex job has failed with error: {status.error or 'unknown error'}"
        case "cancelled":
            return "$reindex job has been cancelled"
    raise ValueError(f"unknown job state {status.state!r}")


def status_response(status: JobStatus, poll_url: str) -> Response:
    """The poll answer: 202 OperationOutcome while running, 200 batch-response Bundle once ended."""
    progress = _header_safe(progress_text(status))
    if status.state in RUNNING_STATES:
        headers = {"X-Progress": progress, "Retry-After": str(retry_after_seconds(status))}
        return 202, operation_outcome(_information(progress)), headers
    return 200, _ended_bundle(status, poll_url, progress), {"X-Progress": progress}


def retry_after_seconds(status: JobStatus) -> int:
    """A tenth of the estimated time left, 1..10 s: small jobs are polled every second, long ones less often;
    a paused job, whose end nobody can tell, every 10 s."""
    if status.paused:
        return MAX_RETRY_AFTER_SECONDS
    if status.state != "in_progress" or status.seconds_left is None:
        return 1
    return max(1, min(MAX_RETRY_AFTER_SECONDS, math.ceil(status.seconds_left / 10)))


def cancel_requested_response(poll_url: str) -> Response:
    """202 of a `DELETE` on a running job: cancellation is asynchronous, the poll URL shows when it took effect."""
    text = f"$reindex job cancellation has been requested. Poll for status at the following URL: {poll_url}"
    return 202, operation_outcome(_information(text)), {"Content-Location": poll_url}


def cancel_ended_response(state: JobState) -> Response:
    """200 of a `DELETE` on a job that already ended: it keeps the state it ended in."""
    if state in RUNNING_STATES:
        raise ValueError(f"a {state} job has not ended; answer with cancel_requested_response")
    return _ended_response(state, "cancelled")


def control_response(control: JobControl, before: ControlledJob, poll_url: str) -> Response:
    """The answer to a pause, resume or throttle: 202 with the job's new setting while it runs (its workers
    act on it at their next batch); 200 for a job that had ended, which is left as it ended."""
    done = {"pause": "paused", "resume": "resumed", "throttle": "throttled"}[control.action]
    if before.ended:
        return _ended_response(before.state, done)
    match control.action:
        case "pause":
            text = ("$reindex job was paused already." if before.paused else
                    "$reindex job has been paused: it keeps its progress, and its workers hand their chunks back "
                    "after their current batch.")
        case "resume":
            text = "$reindex job has been resumed." if before.paused else "$reindex job was not paused."
        case "throttle":
            text = (f"$reindex job is throttled to {control.rate} resources per second over all workers."
                    if control.rate is not None else "$reindex job is not throttled.")
    text += f" Poll for status at the following URL: {poll_url}"
    return 202, operation_outcome(_information(text)), {"Content-Location": poll_url}


def _ended_response(state: JobState, undone: str) -> Response:
    ended_as = "completed successfully" if state == "completed" else state
    text = f"$reindex job has already ended as {ended_as}; it was not {undone}."
    return 200, operation_outcome(_information(text)), {}


def _ended_bundle(status: JobStatus, poll_url: str, progress: str) -> dict[str, Any]:
    first_text = status.report or progress  # a job that failed while planning has no report
    first_issue = {
        "completed": Issue("information", "informational", first_text),
        "failed": Issue("error", "processing", first_text),
        "cancelled": Issue("warning", "informational", first_text),
    }[status.state]
    link = _information(f"Access raw text report at URL: {poll_url}&_return=report")
    # A cancelled job did what its client asked: 200 like a completed one; only failures are 500.
    http_status = "500 Internal Server Error" if status.state == "failed" else "200 OK"
    entry = {"response": {"status": http_status, "outcome": operation_outcome(first_issue, link)}}
    return bundle("batch-response", [entry], {})


def _details(status: JobStatus) -> str:
    """Our additions after HAPI's progress text: counts, rate, throttle and ETA, each only when known (a
    paused job has no ETA)."""
    parts = [f"Processed {status.processed} of {status.total} resources" if status.total is not None
             else f"Processed {status.processed} resources"]
    if status.rate is not None:
        parts.append(f"{math.floor(status.rate)}/sec")
    if status.throttle is not None:
        parts.append(f"throttled to {status.throttle}/sec")
    if status.seconds_left is not None and not status.paused:
        parts.append(f"about {math.ceil(status.seconds_left)} s left")
    return " " + ", ".join(parts) + "."


def _prefer_warning(prefer_async: bool) -> list[Issue]:
    return [] if prefer_async else [Issue("warning", "required", PREFER_ASYNC_WARNING)]


def _information(text: str) -> Issue:
    return Issue("information", "informational", text)


def _header_safe(text: str) -> str:
    # An error message may hold line breaks or control characters, which an HTTP header must not.
    return " ".join("".join(char if char.isprintable() else " " for char in text).split())
