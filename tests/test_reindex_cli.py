"""`python -m service reindex`: the operator's form of $reindex, with the same validation."""

from __future__ import annotations

import asyncio
import re
import shlex
import signal
import subprocess
import sys
from uuid import uuid4

import orjson

from tests.conftest import DATA_DIR, run_load
from tests.terminal import run_on_terminal, screen_rows

# The one progress row of `reindex --wait` on a terminal (`^C` is the terminal's echo of the interrupt).
PROGRESS_ROW = re.compile(r"  in progress +\d+%  [\d,]+ of [\d,]+  [\d,]+/s  ETA \d+:\d\d:\d\d(\^C)?")
LOG_ROW = re.compile(r"\d{4}-\d\d-\d\dT[\d:.]+Z \[")  # the console renderer's lines start with the time


def cli_env(database_url: str, **settings: str) -> dict[str, str]:
    return {"DATABASE_URL": database_url, "PATH": "/usr/bin:/bin", **settings}


def run_reindex(database_url: str, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "service", "reindex", *arguments], capture_output=True, text=True,
                          env=cli_env(database_url, FHIR_LOG_LEVEL="WARNING"),
                          timeout=120)


async def test_reindex_from_the_shell_waits_and_reports(database_url, db, tmp_path):
    source = tmp_path / "orgs.ndjson"
    source.write_text("\n".join(f'{{"resourceType":"Organization","id":"o{n}","name":"Org {n}"}}' for n in range(25)))
    assert run_load(database_url, str(source)).returncode == 0
    # Rows of unknown provenance: compared with the stored ones, and their fingerprints recorded.
    await db.execute("UPDATE resource_index_state SET index_hash = NULL")
    result = run_reindex(database_url, "--url", "Organization?", "--batch-size", "10", "--wait")
    assert result.returncode == 0, result.stderr
    assert "Reindex (v3) Report" in result.stdout and "ResourceType[Organization]" in result.stdout
    assert await db.fetchval("SELECT state FROM job") == "completed"
    assert await db.fetchval("SELECT sum(processed) FROM job_chunk") == 25
    assert await db.fetchval("SELECT count(*) FROM resource_index_state WHERE index_hash IS NULL") == 0


async def test_the_shell_passes_storage_and_force_options(database_url, db):
    result = run_reindex(database_url, "--url", "Organization?", "--no-search-parameters", "--optimize-storage",
                         "ALL_VERSIONS", "--force")
    assert result.returncode == 0, result.stderr
    parameters = orjson.loads(await db.fetchval("SELECT parameters::text FROM job"))
    assert (parameters["reindexSearchParameters"], parameters["optimizeStorage"], parameters["force"]) == (
        "NONE", "ALL_VERSIONS", True)


async def test_bad_url_is_refused_and_starts_nothing(database_url, db):
    result = run_reindex(database_url, "--url", "Organisation?")
    assert result.returncode == 2
    assert "unknown resource type: Organisation" in result.stderr
    assert await db.fetchval("SELECT count(*) FROM job") == 0


async def stale_plannet(database_url: str) -> None:
    """Plan-Net with its custom SearchParameters loaded last: a job has work to do on every type they touch."""
    result = run_load(database_url, str(DATA_DIR / "plannet"))
    assert result.returncode == 0, result.stderr


async def test_wait_on_a_terminal_shows_one_progress_line_and_ctrl_c_leaves_the_job_to_the_workers(
        database_url, db):
    await stale_plannet(database_url)
    # One worker and one resource per batch: slow enough to be interrupted half-way; --verbose: log lines to
    # keep apart from the progress line.
    argv = [sys.executable, "-m", "service", "reindex", "--batch-size", "1", "--wait", "--verbose"]
    output, code = run_on_terminal(argv, cli_env(database_url, FHIR_REINDEX_WORKERS="1"),
                                   interrupt_when=lambda text: text.count("/s  ETA ") >= 2)
    rows = screen_rows(output)
    assert code == 130, output
    assert "Traceback" not in output
    progress_rows = [row for row in rows if "%" in row]
    assert len(progress_rows) == 1 and PROGRESS_ROW.fullmatch(progress_rows[0]), rows
    assert output.count("\r  in progress") >= 2  # redrawn in place
    assert any(LOG_ROW.match(row) and "chunk_started" in row for row in rows), rows
    job_id = await db.fetchval("SELECT id::text FROM job")
    assert any(row.startswith(f"Interrupted. Job {job_id} continues") for row in rows), rows
    # The workers handed their chunks back: any replica's workers take the job over at once.
    assert await db.fetchval("SELECT state FROM job") == "in_progress"
    assert await db.fetchval("SELECT count(*) FROM job_chunk WHERE state = 'running'") == 0
    assert await db.fetchval("SELECT sum(processed) FROM job_chunk") < await db.fetchval(
        "SELECT total_estimate FROM job")

    command = next(row.removeprefix("To cancel it: ") for row in rows if row.startswith("To cancel it: "))
    cancelled = subprocess.run(shlex.split(command), capture_output=True, text=True, env=cli_env(database_url),
                               timeout=60)
    assert cancelled.returncode == 0, cancelled.stderr
    assert cancelled.stdout == f"Job {job_id} is cancelled.\n"
    assert await db.fetchval("SELECT state FROM job") == "cancelled"


async def test_cancel_on_interrupt_cancels_the_job(database_url, db):
    await stale_plannet(database_url)
    process = subprocess.Popen(
        [sys.executable, "-m", "service", "reindex", "--batch-size", "1", "--wait", "--cancel-on-interrupt"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(database_url, FHIR_REINDEX_WORKERS="1"))
    try:
        async with asyncio.timeout(60):
            while not await db.fetchval("SELECT coalesce(sum(processed), 0) FROM job_chunk"):
                await asyncio.sleep(0.05)
        process.send_signal(signal.SIGINT)
        _stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    job_id = await db.fetchval("SELECT id::text FROM job")
    assert process.returncode == 130, stderr
    assert stderr == f"Interrupted. Job {job_id} is cancelled.\n"  # not a terminal: no progress line, no \\r
    assert await db.fetchval("SELECT state FROM job") == "cancelled"
    assert await db.fetchval("SELECT sum(processed) FROM job_chunk") < await db.fetchval(
        "SELECT total_estimate FROM job")


async def test_cancel_of_an_ended_or_unknown_job_cancels_nothing(database_url, db):
    started = run_reindex(database_url, "--url", "Organization?")  # no Organization stored: it completes at once
    job_id = started.stdout.split()[1]
    ended = run_reindex(database_url, "--cancel", job_id)
    assert ended.returncode == 1
    assert ended.stdout == f"Job {job_id} had already ended as completed; it was not cancelled.\n"
    unknown_id = uuid4()
    unknown = run_reindex(database_url, "--cancel", str(unknown_id))
    assert (unknown.returncode, unknown.stderr) == (2, f"error: unknown job {unknown_id}\n")
    assert await db.fetchval("SELECT state FROM job") == "completed"


async def test_pause_resume_and_throttle_from_the_shell(database_url, db):
    created = run_load(database_url, str(DATA_DIR / "plannet" / "Endpoint.ndjson.gz"))
    assert created.returncode == 0, created.stderr
    started = run_reindex(database_url, "--url", "Endpoint?", "--rate", "300")  # no worker runs: it stays queued
    assert started.returncode == 0, started.stderr
    job_id = started.stdout.split()[1]
    assert await db.fetchval("SELECT throttle_rate FROM job") == 300
    steps = [
        (("--pause", job_id), 0,
         f"Job {job_id} is paused: the workers holding its chunks hand them back after their current batch."),
        (("--resume", job_id), 0, f"Job {job_id} is resumed."),
        (("--resume", job_id), 0, f"Job {job_id} was not paused."),
        (("--throttle", job_id, "50"), 0, f"Job {job_id} is throttled to 50 resources per second over all workers."),
        (("--throttle", job_id, "0"), 0, f"Job {job_id} is not throttled."),
        (("--cancel", job_id), 0, f"Job {job_id} is cancelled."),
        (("--pause", job_id), 1, f"Job {job_id} had already ended as cancelled; it was not paused."),
    ]
    for arguments, code, stdout in steps:
        result = run_reindex(database_url, *arguments)
        assert (result.returncode, result.stdout) == (code, stdout + "\n"), result.stderr
    job = await db.fetchrow("SELECT state, paused_at, throttle_rate FROM job")
    assert (job["state"], job["paused_at"], job["throttle_rate"]) == ("cancelled", None, None)


async def test_controls_of_an_unknown_job_or_with_a_bad_rate_change_nothing(database_url, db):
    unknown_id = uuid4()
    unknown = run_reindex(database_url, "--pause", str(unknown_id))
    assert (unknown.returncode, unknown.stderr) == (2, f"error: unknown job {unknown_id}\n")
    fast = run_reindex(database_url, "--throttle", str(unknown_id), "fast")
    assert fast.returncode == 2 and "error: The rate must be a whole number" in fast.stderr
    negative = run_reindex(database_url, "--url", "Organization?", "--rate", "-5")
    assert negative.returncode == 2 and "'throttle' of $reindex: Input should be greater than" in negative.stderr
    assert await db.fetchval("SELECT count(*) FROM job") == 0


def test_options_that_do_not_fit_together_are_refused(database_url):
    assert "--cancel-on-interrupt needs --wait" in run_reindex(database_url, "--cancel-on-interrupt").stderr
    refused = run_reindex(database_url, "--cancel", str(uuid4()), "--wait")
    assert refused.returncode == 2 and "--cancel JOB_ID takes no option of a new job" in refused.stderr
    refused = run_reindex(database_url, "--throttle", str(uuid4()), "10", "--rate", "5")
    assert refused.returncode == 2 and "--throttle JOB_ID takes no option of a new job" in refused.stderr
    refused = run_reindex(database_url, "--pause", str(uuid4()), "--resume", str(uuid4()))
    assert refused.returncode == 2 and "argument --resume: not allowed with argument --pause" in refused.stderr
