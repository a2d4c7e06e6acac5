"""Start, poll and cancel answers of the `$reindex` job endpoints, against the brief and the HAPI seed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from service.jobs.control import ControlledJob, JobControl
from service.jobs.repository import JobProgress
from service.jobs.status import (
    PREFER_ASYNC_WARNING,
    JobStatus,
    accepted_response,
    already_running_response,
    cancel_ended_response,
    cancel_requested_response,
    control_response,
    job_status,
    progress_text,
    retry_after_seconds,
    status_response,
)

SEED_DIR = Path(__file__).resolve().parents[1] / "data" / "seed"
POLL = "https://fhir.example/fhir/$hapi.fhir.reindex-status?_jobId=c27486a1-3449-4671-ad8a-282c2d44c598"
ACCEPTED = f"$reindex job has been accepted. Poll for status at the following URL: {POLL}"
REPORT = "Reindex (v3) Report\n-------------------------------------------------\n"


def seed_exchange() -> tuple[dict[str, str], str]:
    """The seed's response headers (lower-cased names) and its response body text."""
    text = (SEED_DIR / "POST_reindex.txt").read_text()
    header_block = text.split("Response Headers\n", 1)[1].split("\nResponse\n", 1)[0]
    headers = dict(line.split(": ", 1) for line in header_block.strip().splitlines())
    return headers, text.split("\nResponse\n", 1)[1].strip()


def issues(body: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(issue["severity"], issue["code"], issue["diagnostics"]) for issue in body["issue"]]


def test_accepted_matches_the_seed_byte_for_byte() -> None:
    headers, body_text = seed_exchange()
    poll_url = headers["content-location"]
    status, body, response_headers = accepted_response(poll_url, prefer_async=True)
    assert status == 202
    assert response_headers == {"Content-Location": poll_url}
    assert body == json.loads(body_text)
    # HAPI pretty-prints with two-space indents, as orjson does: same keys, order, escapes and narrative bytes.
    assert orjson.dumps(body, option=orjson.OPT_INDENT_2).decode() == body_text


def test_accepted_without_prefer_async_warns() -> None:
    status, body, headers = accepted_response(POLL, prefer_async=False)
    assert status == 202 and headers == {"Content-Location": POLL}
    warning = "This method should be invoked with the Prefer: respond-async header. Proceeding anyway."
    assert issues(body) == [("information", "informational", ACCEPTED), ("warning", "required", warning)]
    div = body["text"]["div"]
    assert div.count("<tr>") == 2 and '<td style="font-weight: bold;">WARNING</td>' in div


@pytest.mark.parametrize("prefer_async", [True, False])
def test_already_running(prefer_async: bool) -> None:
    status, body, headers = already_running_response(POLL, prefer_async)
    assert status == 202 and headers == {"Content-Location": POLL}
    found = issues(body)
    assert found[0] == ("information", "informational", ACCEPTED)
    assert found[1][:2] == ("information", "informational")
    assert "identical $reindex job is already queued or in progress" in found[1][2]
    assert found[2:] == ([] if prefer_async else [("warning", "required", PREFER_ASYNC_WARNING)])


@pytest.mark.parametrize(("status", "progress"), [
    (JobStatus("queued"), "$reindex job has not yet started"),
    (JobStatus("in_progress"),
     "$reindex job has started and is in progress Overall progress: 0%. Processed 0 resources."),
    (JobStatus("in_progress", processed=1234, total=5000, rate=800.9, seconds_left=4.2),
     "$reindex job has started and is in progress Overall progress: 24%."
     " Processed 1234 of 5000 resources, 800/sec, about 5 s left."),
    (JobStatus("in_progress", processed=10, total=0),
     "$reindex job has started and is in progress Overall progress: 0%. Processed 10 of 0 resources."),
    (JobStatus("in_progress", processed=7000, total=5000, rate=0.0),
     "$reindex job has started and is in progress Overall progress: 100%. Processed 7000 of 5000 resources, 0/sec."),
    (JobStatus("in_progress", processed=1000, total=5000, rate=198.7, seconds_left=9, throttle=200),
     "$reindex job has started and is in progress Overall progress: 20%."
     " Processed 1000 of 5000 resources, 198/sec, throttled to 200/sec, about 9 s left."),
    (JobStatus("finalizing", processed=5000, total=5000),
     "$reindex job has completed main processing and is being finalized."),
])
def test_running_states_answer_202(status: JobStatus, progress: str) -> None:
    assert progress_text(status) == progress
    http_status, body, headers = status_response(status, POLL)
    assert http_status == 202
    assert headers == {"X-Progress": progress, "Retry-After": "1"}
    assert issues(body) == [("information", "informational", progress)]
    assert body["resourceType"] == "OperationOutcome" and "text" in body


@pytest.mark.parametrize(("status", "seconds"), [
    (JobStatus("queued"), 1),
    (JobStatus("finalizing"), 1),
    (JobStatus("in_progress"), 1),
    (JobStatus("in_progress", seconds_left=0), 1),
    (JobStatus("in_progress", seconds_left=9.5), 1),
    (JobStatus("in_progress", seconds_left=31), 4),
    (JobStatus("in_progress", seconds_left=3600), 10),
    (JobStatus("in_progress", seconds_left=9.5, paused=True), 10),
    (JobStatus("queued", paused=True), 10),
])
def test_retry_after(status: JobStatus, seconds: int) -> None:
    assert retry_after_seconds(status) == seconds


def ended(status: JobStatus) -> tuple[str, list[tuple[str, str, str]], dict[str, str]]:
    http_status, body, headers = status_response(status, POLL)
    assert http_status == 200
    assert body["resourceType"] == "Bundle" and body["type"] == "batch-response"
    (entry,) = body["entry"]
    outcome = entry["response"]["outcome"]
    assert outcome["resourceType"] == "OperationOutcome" and outcome["text"]["status"] == "generated"
    assert "Retry-After" not in headers
    return entry["response"]["status"], issues(outcome), headers


REPORT_LINK = ("information", "informational", f"Access raw text report at URL: {POLL}&_return=report")


@pytest.mark.parametrize(("status", "http_status", "first_issue", "progress"), [
    (JobStatus("completed", report=REPORT), "200 OK", ("information", "informational", REPORT),
     "$reindex job has completed successfully"),
    (JobStatus("failed", error="3 resources failed", report=REPORT), "500 Internal Server Error",
     ("error", "processing", REPORT), "$reindex job has failed with error: 3 resources failed"),
    (JobStatus("failed", error="no such table"), "500 Internal Server Error",
     ("error", "processing", "$reindex job has failed with error: no such table"),
     "$reindex job has failed with error: no such table"),
    (JobStatus("failed"), "500 Internal Server Error",
     ("error", "processing", "$reindex job has failed with error: unknown error"),
     "$reindex job has failed with error: unknown error"),
    (JobStatus("failed", error="line one\nline\ttwo\r\n", report=REPORT), "500 Internal Server Error",
     ("error", "processing", REPORT), "$reindex job has failed with error: line one line two"),
    (JobStatus("cancelled", report=REPORT), "200 OK", ("warning", "informational", REPORT),
     "$reindex job has been cancelled"),
])
def test_ended_states_answer_a_bundle(
    status: JobStatus, http_status: str, first_issue: tuple[str, str, str], progress: str,
) -> None:
    entry_status, found, headers = ended(status)
    assert entry_status == http_status
    assert found == [first_issue, REPORT_LINK]
    assert headers == {"X-Progress": progress}


def test_cancel_requested() -> None:
    status, body, headers = cancel_requested_response(POLL)
    assert status == 202 and headers == {"Content-Location": POLL}
    text = f"$reindex job cancellation has been requested. Poll for status at the following URL: {POLL}"
    assert issues(body) == [("information", "informational", text)]


@pytest.mark.parametrize(("state", "text"), [
    ("completed", "$reindex job has already ended as completed successfully; it was not cancelled."),
    ("failed", "$reindex job has already ended as failed; it was not cancelled."),
    ("cancelled", "$reindex job has already ended as cancelled; it was not cancelled."),
])
def test_cancel_of_an_ended_job(state: Any, text: str) -> None:
    status, body, headers = cancel_ended_response(state)
    assert (status, headers) == (200, {})
    assert issues(body) == [("information", "informational", text)]


def test_an_unknown_state_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown job state"):
        progress_text(JobStatus("paused"))  # type: ignore[arg-type]


@pytest.mark.parametrize("state", ["queued", "in_progress", "finalizing"])
def test_cancel_ended_refuses_a_running_state(state: Any) -> None:
    with pytest.raises(ValueError, match="has not ended"):
        cancel_ended_response(state)


@pytest.mark.parametrize(("status", "progress"), [
    (JobStatus("in_progress", processed=1234, total=5000, rate=800.9, seconds_left=4.2, paused=True),
     "$reindex job has been paused Overall progress: 24%. Processed 1234 of 5000 resources, 800/sec."),
    (JobStatus("queued", paused=True, throttle=50),
     "$reindex job has been paused Overall progress: 0%. Processed 0 resources, throttled to 50/sec."),
])
def test_a_paused_job_is_polled_as_a_running_one_with_a_text_of_its_own(status: JobStatus, progress: str) -> None:
    http_status, body, headers = status_response(status, POLL)
    assert http_status == 202
    assert headers == {"X-Progress": progress, "Retry-After": "10"}
    assert issues(body) == [("information", "informational", progress)]


def test_an_ended_job_that_was_paused_shows_how_it_ended() -> None:
    assert progress_text(JobStatus("cancelled", paused=True)) == "$reindex job has been cancelled"


@pytest.mark.parametrize(("throttle", "seconds_left"), [(None, 8.0), (400, 8.0), (100, 20.0)])
def test_the_time_left_of_a_throttled_job_is_at_its_throttle_when_that_is_slower(
        throttle: int | None, seconds_left: float) -> None:
    progress = JobProgress("in_progress", 1000, 3000, 4.0, None, None, False, throttle)  # 250/sec so far
    assert job_status(progress).seconds_left == seconds_left


@pytest.mark.parametrize(("control", "before", "text"), [
    (JobControl("pause"), ControlledJob("in_progress", False, None),
     "$reindex job has been paused: it keeps its progress, and its workers hand their chunks back after their "
     "current batch."),
    (JobControl("pause"), ControlledJob("queued", True, None), "$reindex job was paused already."),
    (JobControl("resume"), ControlledJob("in_progress", True, None), "$reindex job has been resumed."),
    (JobControl("resume"), ControlledJob("in_progress", False, None), "$reindex job was not paused."),
    (JobControl("throttle", 250), ControlledJob("in_progress", False, None),
     "$reindex job is throttled to 250 resources per second over all workers."),
    (JobControl("throttle"), ControlledJob("in_progress", True, 250), "$reindex job is not throttled."),
])
def test_a_control_of_a_running_job(control: JobControl, before: ControlledJob, text: str) -> None:
    status, body, headers = control_response(control, before, POLL)
    assert (status, headers) == (202, {"Content-Location": POLL})
    assert issues(body) == [
        ("information", "informational", f"{text} Poll for status at the following URL: {POLL}")]


@pytest.mark.parametrize(("action", "state", "text"), [
    ("pause", "completed", "$reindex job has already ended as completed successfully; it was not paused."),
    ("resume", "failed", "$reindex job has already ended as failed; it was not resumed."),
    ("throttle", "cancelled", "$reindex job has already ended as cancelled; it was not throttled."),
])
def test_a_control_of_an_ended_job(action: Any, state: Any, text: str) -> None:
    status, body, headers = control_response(JobControl(action, 10), ControlledJob(state, True, None), POLL)
    assert (status, headers) == (200, {})
    assert issues(body) == [("information", "informational", text)]
