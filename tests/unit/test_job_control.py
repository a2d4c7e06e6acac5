"""The query of a `POST` on the status URL (pause, resume, throttle), a throttle rate, and a paused job's
progress line."""

from __future__ import annotations

import dataclasses

import pytest

from service.fhir.errors import FhirError
from service.jobs.control import JobControl, parse_control, parse_rate
from service.jobs.status import JobStatus
from service.reindex_cli import progress_line

JOB = ("_jobId", "c27486a1-3449-4671-ad8a-282c2d44c598")


@pytest.mark.parametrize(("query", "control"), [
    ([JOB, ("_action", "pause")], JobControl("pause")),
    ([("_action", "resume"), JOB], JobControl("resume")),
    ([JOB, ("_action", "throttle"), ("rate", "250")], JobControl("throttle", 250)),
    ([JOB, ("_action", "throttle"), ("rate", " 0 ")], JobControl("throttle", None)),
    ([JOB, ("_action", "throttle"), ("rate", "")], JobControl("throttle", None)),
    ([JOB, ("_action", "throttle")], JobControl("throttle", None)),
])
def test_controls(query: list[tuple[str, str]], control: JobControl) -> None:
    assert parse_control(query) == control


@pytest.mark.parametrize(("query", "message"), [
    ([JOB], "The _action parameter is required, one of: pause, resume, throttle"),
    ([JOB, ("_action", "Pause")], "The _action parameter is required, one of: pause, resume, throttle"),
    ([JOB, ("_action", "pause"), ("_action", "pause")], "Parameter '_action' may appear at most once"),
    ([JOB, JOB, ("_action", "pause")], "Parameter '_jobId' may appear at most once"),
    ([JOB, ("_action", "resume"), ("rate", "5")], "The rate parameter goes with _action=throttle only"),
    ([JOB, ("_action", "pause"), ("_format", "json")],
     "Unknown parameter '_format' for this operation; known: _action, _jobId, rate"),
    ([JOB, ("_action", "throttle"), ("rate", "1.5")], "not '1.5'"),
])
def test_refusals(query: list[tuple[str, str]], message: str) -> None:
    with pytest.raises(FhirError) as refused:
        parse_control(query)
    assert refused.value.status == 400 and message in refused.value.diagnostics


@pytest.mark.parametrize("text", ["-1", "+5", "1e3", "٣", "1000001", "fast"])
def test_a_rate_is_a_whole_number_up_to_a_million(text: str) -> None:
    with pytest.raises(FhirError, match="from 0 \\(unthrottled\\) to 1000000"):
        parse_rate(text)


def test_a_million_per_second_is_the_highest_rate() -> None:
    assert parse_rate("1000000") == 1_000_000


def test_the_progress_line_of_a_paused_job_has_no_rate_or_eta() -> None:
    running = JobStatus("in_progress", 1000, 4000, rate=250.0, seconds_left=12)
    assert progress_line(running) == "  in progress   25%  1,000 of 4,000  250/s  ETA 0:00:12"
    assert progress_line(dataclasses.replace(running, paused=True)) == "  paused        25%  1,000 of 4,000"
