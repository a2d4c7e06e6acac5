"""The bulk loader on the shared third-party data: everything loads, counts match the files."""

from __future__ import annotations

import gzip
import re
from collections import Counter

import orjson

from service.search.param_hash import sp_hash
from tests.conftest import DATA_DIR, run_load

DATASETS = ["synthea-r4-2019", "synthea-bulk-10", "synthea-bulk-1000", "plannet"]


def file_counts() -> tuple[Counter[str], Counter[str]]:
    """Lines per resource type, and distinct ids per type (some ids recur across datasets)."""
    lines: Counter[str] = Counter()
    distinct: dict[str, set[str]] = {}
    for dataset in DATASETS:
        for path in sorted((DATA_DIR / dataset).glob("*.ndjson.gz")):
            with gzip.open(path, "rb") as handle:
                for line in handle:
                    resource = orjson.loads(line)
                    lines[resource["resourceType"]] += 1
                    distinct.setdefault(resource["resourceType"], set()).add(resource["id"])
    return lines, Counter({res_type: len(ids) for res_type, ids in distinct.items()})


async def test_load_shared_data(database_url, db):
    lines, distinct = file_counts()
    result = run_load(database_url, *(str(DATA_DIR / dataset) for dataset in DATASETS))
    assert result.returncode == 0, result.stderr
    assert f"Loaded {sum(lines.values())} resources" in result.stdout
    stored = Counter({row["res_type"]: row["n"] for row in await db.fetch(
        "SELECT res_type, count(*) AS n FROM resource GROUP BY res_type")})
    assert stored == distinct
    versions = await db.fetchval("SELECT count(*) FROM resource_version")
    assert versions == sum(lines.values())
    sample = await db.fetchrow("SELECT fhir_id, version, body FROM resource WHERE res_type = 'Organization' LIMIT 1")
    body = orjson.loads(sample["body"])
    assert body["id"] == sample["fhir_id"] and body["meta"]["versionId"] == str(sample["version"])


async def test_invalid_lines_are_reported_and_skipped(database_url, db, tmp_path):
    source = tmp_path / "mixed.ndjson"
    source.write_bytes(b"\n".join([
        b'{"resourceType":"Organization","id":"good-1","name":"A"}',
        b'{"resourceType":"Organization","id":"bad id"}',
        b'{"resourceType":"Nonsense","id":"x"}',
        b'{"resourceType":"Organization",',
        b'{"resourceType":"Organization","id":"good-1","name":"B"}',
        b'{"resourceType":"Patient"}',
        b'{"resourceType":"Organization","id":"shapeless","identifier":"not-a-list"}',
    ]))
    result = run_load(database_url, str(source))
    assert result.returncode == 1
    assert "4 invalid lines skipped" in result.stdout
    assert "Organization/shapeless: The resource cannot be indexed" in result.stdout
    assert re.search(r"^\s+Organization\s+2$", result.stdout, re.MULTILINE)  # good-1 twice, not shapeless
    assert f"{source}:2:" in result.stdout and f"{source}:3:" in result.stdout and f"{source}:4:" in result.stdout
    assert await db.fetchval("SELECT version FROM resource WHERE fhir_id = 'good-1'") == 2
    assert await db.fetchval("SELECT count(*) FROM resource WHERE res_type = 'Patient'") == 1
    assert await db.fetchval("SELECT count(*) FROM resource WHERE fhir_id = 'shapeless'") == 0


async def test_loaded_search_parameters_index_later_batches(database_url, db, tmp_path):
    source = tmp_path / "with-parameters.ndjson"
    source.write_bytes(b"\n".join([
        orjson.dumps({"resourceType": "SearchParameter", "id": "nickname", "url": "http://example.org/sp/nickname",
                      "name": "nickname", "status": "active", "code": "nickname", "base": ["Organization"],
                      "type": "string", "expression": "Organization.alias"}),
        b'{"resourceType":"SearchParameter","id":"broken","code":"x","base":["Organization"],"type":"string"}',
        b'{"resourceType":"Organization","id":"org-1","alias":["Speedy"]}',
    ]))
    result = run_load(database_url, "--batch-size", "1", str(source))
    assert result.returncode == 1  # the broken parameter
    assert "SearchParameter/broken: Invalid SearchParameter" in result.stdout
    assert await db.fetchval("SELECT count(*) FROM search_parameter_change") == 1
    exact = await db.fetchval("SELECT exact FROM idx_string WHERE sp_hash = $1", sp_hash("Organization", "nickname"))
    assert exact == "Speedy"
    generation = await db.fetchval("SELECT max(generation) FROM search_parameter_change")
    assert await db.fetchval("SELECT index_gen FROM resource WHERE fhir_id = 'org-1'") == generation
