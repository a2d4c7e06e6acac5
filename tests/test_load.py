"""The bulk loader on the shared third-party data: everything loads, counts match the files."""

from __future__ import annotations

import gzip
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

import orjson
import pytest

from service.search.param_hash import sp_hash
from tests.conftest import DATA_DIR, SEARCH_DATASETS, run_load

DATASETS = ["synthea-r4-2019", "synthea-bulk-10", "synthea-bulk-1000", "plannet"]


def shared_files(datasets: Iterable[str], patterns: tuple[str, ...] = ("*.ndjson.gz", "*.json")) -> list[Path]:
    return [path for dataset in datasets for pattern in patterns for path in sorted((DATA_DIR / dataset).glob(pattern))]


def file_resources(paths: list[Path]) -> Iterator[dict]:
    """Every resource of these files: NDJSON lines and Bundle entries."""
    for path in paths:
        if path.name.endswith(".ndjson.gz"):
            with gzip.open(path, "rb") as handle:
                yield from map(orjson.loads, handle)
        else:
            yield from (entry["resource"] for entry in orjson.loads(path.read_bytes())["entry"])


def file_counts(paths: list[Path]) -> tuple[Counter[str], Counter[str]]:
    """Resources per type, and distinct ids per type (some ids recur across datasets)."""
    lines: Counter[str] = Counter()
    distinct: dict[str, set[str]] = {}
    for resource in file_resources(paths):
        lines[resource["resourceType"]] += 1
        distinct.setdefault(resource["resourceType"], set()).add(resource["id"])
    return lines, Counter({res_type: len(ids) for res_type, ids in distinct.items()})


# The search modules' template holds the NDJSON files of two data sets, loaded by the same command (its fixture
# checks that it succeeded); the test loads every other file, Bundles included, on top of a copy of it.
@pytest.mark.dataset(*SEARCH_DATASETS)
async def test_load_shared_data(database_url, db):
    every_file = shared_files(DATASETS)
    in_template = shared_files(SEARCH_DATASETS, ("*.ndjson.gz",))
    added = [path for path in every_file if path not in in_template]
    lines, distinct = file_counts(every_file)
    result = run_load(database_url, *map(str, added))
    assert result.returncode == 0, result.stderr
    assert f"Loaded {sum(file_counts(added)[0].values())} resources" in result.stdout
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
    assert "4 invalid resources skipped" in result.stdout
    problems = result.stderr.splitlines()  # one line a problem, in file order
    assert problems[:3] == [
        f"{source}:2: Organization.id: 'bad id' is not a valid id: 1 to 64 characters of A-Z, a-z, 0-9, '-' "
        "and '.' were expected",
        f"{source}:3: Unknown resource type 'Nonsense': not a FHIR R4 resource type",
        f"{source}:4: Failed to parse the line as JSON: unexpected end of data: line 1 column 32 (char 31)",
    ]
    assert problems[3] == (f"{source}:7: Organization.identifier: Element 'identifier' repeats: a JSON array was "
                           "expected, not the string 'not-a-list'")
    assert len(problems) == 4
    assert "request body" not in result.stderr
    assert re.search(r"^\s+Organization\s+2$", result.stdout, re.MULTILINE)  # good-1 twice, not shapeless
    assert await db.fetchval("SELECT version FROM resource WHERE fhir_id = 'good-1'") == 2
    assert await db.fetchval("SELECT count(*) FROM resource WHERE res_type = 'Patient'") == 1
    assert await db.fetchval("SELECT count(*) FROM resource WHERE fhir_id = 'shapeless'") == 0


async def test_loaded_search_parameters_index_later_batches(database_url, db, tmp_path):
    source = tmp_path / "with-parameters.ndjson"
    source.write_bytes(b"\n".join([
        orjson.dumps({"resourceType": "SearchParameter", "id": "nickname", "url": "http://example.org/sp/nickname",
                      "name": "nickname", "status": "active", "description": "Aliases", "code": "nickname",
                      "base": ["Organization"], "type": "string", "expression": "Organization.alias"}),
        # Valid R4, but a parameter without an expression cannot be used.
        b'{"resourceType":"SearchParameter","id":"broken","url":"http://example.org/sp/x","name":"x",'
        b'"status":"active","description":"x","code":"x","base":["Organization"],"type":"string"}',
        b'{"resourceType":"Organization","id":"org-1","alias":["Speedy"]}',
    ]))
    result = run_load(database_url, "--batch-size", "1", str(source))
    assert result.returncode == 1  # the broken parameter
    assert result.stderr.startswith(f"{source}:2: SearchParameter/broken: Invalid SearchParameter")
    assert await db.fetchval("SELECT count(*) FROM search_parameter_change") == 1
    exact = await db.fetchval("SELECT exact FROM idx_string WHERE sp_hash = $1", sp_hash("Organization", "nickname"))
    assert exact == "Speedy"
    generation = await db.fetchval("SELECT max(generation) FROM search_parameter_change")
    assert await db.fetchval("SELECT s.index_gen FROM resource_index_state s JOIN resource USING (res_id) "
                             "WHERE fhir_id = 'org-1'") == generation


async def test_batches_written_two_at_a_time_keep_the_file_order_of_versions(database_url, db, tmp_path):
    """Batches of 3, each id again every 4 lines, so each batch shares ids with the one before it: a later
    version never overtakes an earlier one, and no batch has to be written again (one holding a resource of
    the batch in flight waits for it instead)."""
    lines = [{"resourceType": "Organization", "id": f"org-{n % 4}", "name": f"line {n}"} for n in range(60)]
    source = tmp_path / "versions.ndjson"
    source.write_bytes(b"\n".join(map(orjson.dumps, lines)))
    result = run_load(database_url, "--batch-size", "3", str(source))
    assert result.returncode == 0, result.stderr
    assert "Loaded 60 resources (4 created, 56 updated)" in result.stdout
    assert "load_batch_retried" not in result.stderr
    last = {line["id"]: (n, line["name"]) for n, line in enumerate(lines)}
    stored = {row["fhir_id"]: (row["version"], orjson.loads(row["body"])["name"])
              for row in await db.fetch("SELECT fhir_id, version, body FROM resource")}
    assert stored == {fhir_id: (sum(1 for line in lines if line["id"] == fhir_id), name)
                      for fhir_id, (_n, name) in last.items()}
    versions = await db.fetch("SELECT fhir_id, convert_from(body, 'UTF8')::jsonb ->> 'name' AS name "
                              "FROM resource_version ORDER BY fhir_id, version")
    assert [(row["fhir_id"], row["name"]) for row in versions] == sorted(
        ((line["id"], line["name"]) for line in lines), key=lambda pair: (pair[0], int(pair[1].split()[1])))


def write_bundle(path, entries: list[dict], bundle_type: str = "transaction") -> None:
    bundle = orjson.dumps({"resourceType": "Bundle", "type": bundle_type, "entry": entries})
    path.write_bytes(gzip.compress(bundle) if path.name.endswith(".gz") else bundle)


async def test_bundles_and_single_resources_load_from_a_directory(database_url, db, tmp_path):
    write_bundle(tmp_path / "orgs.json", [
        {"fullUrl": "urn:uuid:1", "resource": {"resourceType": "Organization", "id": "b1", "name": "One"},
         "request": {"method": "PUT", "url": "Organization/b1"}},
        {"resource": {"resourceType": "Organization", "name": "No id"}, "request": {"method": "POST",
                                                                                    "url": "Organization"}},
        {"resource": {"resourceType": "Practitioner", "id": "p1"}},
    ])
    write_bundle(tmp_path / "more.json.gz", [{"resource": {"resourceType": "Location", "id": "l1"}}], "collection")
    (tmp_path / "one.json").write_bytes(b'{"resourceType":"Patient","id":"solo"}')
    (tmp_path / "lines.ndjson").write_bytes(b'{"resourceType":"Patient","id":"line-1"}\n')
    (tmp_path / "notes.txt").write_text("not a resource file: a directory load leaves it alone")
    result = run_load(database_url, str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "Loaded 6 resources (6 created, 0 updated)" in result.stdout
    stored = {(row["res_type"], row["fhir_id"]) for row in await db.fetch("SELECT res_type, fhir_id FROM resource")}
    assert {("Organization", "b1"), ("Practitioner", "p1"), ("Location", "l1"), ("Patient", "solo"),
            ("Patient", "line-1")} < stored
    assert sum(1 for res_type, _id in stored if res_type == "Organization") == 2  # b1 and a server-assigned id


async def test_an_invalid_bundle_entry_is_one_line_naming_it(database_url, db, tmp_path):
    source = tmp_path / "bundle.json"
    write_bundle(source, [
        {"resource": {"resourceType": "Organization", "id": "fine"}},
        {"resource": {"resourceType": "Organization", "id": "not fine!"}},
        {"request": {"method": "DELETE", "url": "Organization/gone"}},
        {"resource": {"resourceType": "Organization", "id": "unindexable", "identifier": "x"}},
    ], "batch")
    result = run_load(database_url, str(source))
    assert result.returncode == 1
    problems = result.stderr.splitlines()
    assert problems[:2] == [
        f"{source}: entry 2: Organization.id: 'not fine!' is not a valid id: 1 to 64 characters of A-Z, a-z, "
        "0-9, '-' and '.' were expected",
        f"{source}: entry 3: the entry holds no resource (a JSON object in 'resource')",
    ]
    assert problems[2] == (f"{source}: entry 4: Organization.identifier: Element 'identifier' repeats: a JSON "
                           "array was expected, not the string 'x'")
    assert len(problems) == 3
    assert "3 invalid resources skipped" in result.stdout
    assert await db.fetchval("SELECT array_agg(fhir_id) FROM resource") == ["fine"]


async def test_a_file_that_is_not_json_is_one_line(database_url, db, tmp_path):
    source = tmp_path / "broken.json"
    source.write_bytes(b'{"resourceType": "Bundle", "entry": [')
    result = run_load(database_url, str(source))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"{source}: Failed to parse the file as JSON: unexpected end of data: line 1 column 38 (char 37)"]


async def test_a_missing_path_is_one_line_and_loads_nothing(database_url, db, tmp_path):
    good = tmp_path / "good.ndjson"
    good.write_bytes(b'{"resourceType":"Patient","id":"p"}\n')
    missing = tmp_path / "missing.ndjson"
    result = run_load(database_url, str(good), str(missing))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"error: {missing}: no such file or directory"]
    assert await db.fetchval("SELECT count(*) FROM resource") == 0  # checked before anything is written


async def test_an_unreadable_file_is_one_line(database_url, db, tmp_path):
    source = tmp_path / "corrupt.ndjson.gz"
    source.write_bytes(b"these bytes are not gzip")
    result = run_load(database_url, str(source))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"error: {source}: cannot be read: Not a gzipped file (b'th')"]
    assert "Traceback" not in result.stderr


async def test_a_resource_that_is_not_valid_r4_is_one_line_naming_each_problem(database_url, db, tmp_path):
    source = tmp_path / "mixed.ndjson"
    source.write_bytes(b"\n".join([
        b'{"resourceType":"Patient","id":"ok-1","name":[{"family":"' + "Ågren ".encode() * 150_000 + b'"}]}',
        b'{"resourceType":"Patient","id":"bad-1","active":"yes","birthDate":"2020-13-45","nickname":"Bob"}',
        b'{"resourceType":"Patient","id":"bad-2","name":[{"family":"a\\u0000b"}]}',
        b'{"resourceType":"Patient","id":"deep","x":' + b"[" * 300 + b"]" * 300 + b"}",
        b'{"resourceType":"Patient","id":"ok-2"}',
    ]))
    result = run_load(database_url, str(source))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"{source}:2: Patient.active: A boolean must be JSON true or false, not the string 'yes'; Patient.birthDate: "
        "'2020-13-45' is not a valid date: YYYY, YYYY-MM or YYYY-MM-DD was expected; Patient.nickname: Unknown "
        "element 'nickname' in Patient",
        f"{source}:3: Patient.name[0].family: Control character U+0000 at position 1: strings may hold no control "
        "characters but tab, CR and LF",
        f"{source}:4: The line nests JSON objects and arrays more than 100 levels deep, the most this server accepts",
    ]
    assert "3 invalid resources skipped" in result.stdout
    assert await db.fetchval("SELECT array_agg(fhir_id ORDER BY fhir_id) FROM resource") == ["ok-1", "ok-2"]
    family = await db.fetchval("SELECT body FROM resource WHERE fhir_id = 'ok-1'")
    assert len(orjson.loads(family)["name"][0]["family"]) == 900_000  # stored whole, indexed by a prefix
