"""`python -m service reindex`: the operator's form of $reindex, with the same validation."""

from __future__ import annotations

import subprocess
import sys

import orjson

from tests.conftest import run_load


def run_reindex(database_url: str, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "service", "reindex", *arguments], capture_output=True, text=True,
                          env={"DATABASE_URL": database_url, "PATH": "/usr/bin:/bin", "FHIR_LOG_LEVEL": "WARNING"},
                          timeout=120)


async def test_reindex_from_the_shell_waits_and_reports(database_url, db, tmp_path):
    source = tmp_path / "orgs.ndjson"
    source.write_text("\n".join(f'{{"resourceType":"Organization","id":"o{n}","name":"Org {n}"}}' for n in range(25)))
    assert run_load(database_url, str(source)).returncode == 0
    await db.execute("UPDATE resource SET index_hash = NULL")  # rows of unknown provenance: all rewritten
    result = run_reindex(database_url, "--url", "Organization?", "--batch-size", "10", "--wait")
    assert result.returncode == 0, result.stderr
    assert "Reindex (v3) Report" in result.stdout and "ResourceType[Organization]" in result.stdout
    assert await db.fetchval("SELECT state FROM job") == "completed"
    assert await db.fetchval("SELECT sum(processed) FROM job_chunk") == 25
    assert await db.fetchval("SELECT count(*) FROM resource WHERE index_hash IS NULL") == 0


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
