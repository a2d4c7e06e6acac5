"""Searches that must stay index-driven at scale: at a size where a scan of the whole table is what PostgreSQL
picks when no index serves a join, the plans of the statements the service runs read index ranges whose size
follows the page and its matches, never scan `resource` or an `idx_*` table sequentially, and read the searched
resources' rows (bodies) for the page only, however many resources match.

The rows are written by SQL (generate_series) in the shape the loader writes them: a resource row and its index
rows, the built-in parameters' hashes. Every 100th Organization is a parent (`partOf` of the next 99); one parent
in 50 is named "Sygehus"."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import datetime, timezone
from typing import Any

import asyncpg
import orjson
import pytest
from aiohttp.test_utils import TestClient

from service.app import create_app
from service.search.param_hash import sp_hash
from service.search.query import SearchContext, SearchQuery, parse_search
from service.search.registry import Registry
from service.search.sql import count_statement
from service.store.resources import EXTRACTOR
from service.store.search import first_statement
from tests.databases import admin, clone_statement, with_database
from tests.search_data import search_settings

ORGANIZATIONS = 30_000
SYSTEM = "urn:plans"
# Rows a plan node may read (rows times loops): well under the table (30,000 resources) and over every shape's
# matches (the chain matches 495 children of 5 parents, a _revinclude 99, the composite 60 Observations, a `type`
# code 200 Organizations).
MOST_ROWS_READ = 2_000
# The rows of `resource` a page reads for its matches (the alias `r` of the page statement): `_count` = 20 and the
# one that tells whether there is a next page. A count reads none.
PAGE_ROWS = 21
FILL = """
INSERT INTO resource (res_id, res_type, fhir_id, version, last_updated, body, index_extractor)
SELECT n, 'Organization', 'o' || n, 1, timestamptz '2024-01-01' + n * interval '1 second',
       convert_to(json_build_object('resourceType', 'Organization', 'id', 'o' || n,
                                    'name', pg_temp.name(n))::text, 'UTF8'), $2
FROM generate_series(1, $1::int) AS n"""
# name(n): the Organization's name; a parent in 50 is a "Sygehus".
NAME_FUNCTION = """
CREATE FUNCTION pg_temp.name(n int) RETURNS text LANGUAGE sql IMMUTABLE
AS $$ SELECT CASE WHEN n % 5000 = 0 THEN 'Sygehus ' ELSE 'Klinik ' END || n $$"""
# Each parameter's index rows, given its hash ($1) and the number of Organizations ($2).
INDEX_ROWS = {
    "_id": "INSERT INTO idx_token (res_id, sp_hash, value) SELECT n, $1, 'o' || n FROM generate_series(1, $2) n",
    "identifier": ("INSERT INTO idx_token (res_id, sp_hash, system, value) "
                   f"SELECT n, $1, '{SYSTEM}', 'org-' || n FROM generate_series(1, $2) n"),
    "name": ("INSERT INTO idx_string (res_id, sp_hash, normalized, exact) "
             "SELECT n, $1, lower(pg_temp.name(n)), pg_temp.name(n) FROM generate_series(1, $2) n"),
    "_lastUpdated": ("INSERT INTO idx_date (res_id, sp_hash, low, high) SELECT res_id, $1, last_updated, last_updated "
                     "FROM resource WHERE res_id <= $2"),
    "partof": ("INSERT INTO idx_reference (res_id, sp_hash, target_type, target_id) "
               "SELECT n, $1, 'Organization', 'o' || (n - n % 100) FROM generate_series(1, $2) n WHERE n % 100 <> 0"),
    # 150 codes, each of 200 Organizations scattered over the table (every 150th).
    "type": ("INSERT INTO idx_token (res_id, sp_hash, system, value) "
             f"SELECT n, $1, '{SYSTEM}', 'k' || n % 150 FROM generate_series(1, $2) n"),
}
# As many Observations (res_id 100,001 on) with a `code-value-quantity` row each: one of five codes, values 50-120.
OBSERVATIONS = """
INSERT INTO resource (res_id, res_type, fhir_id, version, last_updated, body, index_extractor)
SELECT 100000 + n, 'Observation', 'b' || n, 1, timestamptz '2024-01-01',
       convert_to(json_build_object('resourceType', 'Observation', 'id', 'b' || n)::text, 'UTF8'), $2
FROM generate_series(1, $1::int) AS n"""
COMPOSITES = """
INSERT INTO idx_composite (res_id, sp_hash, parts)
SELECT 100000 + n, $1, json_build_array(
    json_build_object('system', 'http://loinc.org', 'value', (ARRAY['8867-4', '8302-2', '29463-7', '2339-0',
                                                                     '9279-1'])[n % 5 + 1], 'text', NULL),
    json_build_object('value', (50 + 70 * (n * 7919 % 1000) / 1000.0)::numeric(6, 1)::text,
                      'system', 'http://unitsofmeasure.org', 'unit_code', '/min', 'unit', '/min'))::text
FROM generate_series(1, $2) AS n"""
SHAPES = {
    "_id with _include": "Organization?_id=o12345&_include=Organization:partof",
    "_lastUpdated sorted newest first": "Organization?_lastUpdated=ge2000-01-01&_sort=-_lastUpdated",
    "_lastUpdated sorted oldest first": "Organization?_lastUpdated=ge2000-01-01&_sort=_lastUpdated",
    "one-level chain": "Organization?partof:Organization.name=Sygehus",
    "_revinclude": "Organization?_id=o12300&_revinclude=Organization:partof",
    "_has": f"Organization?_has:Organization:partof:identifier={SYSTEM}|org-4567",
    # One resource and a broad inner term: the plan starts from the resource, whichever side the reference is on.
    "_id with a broad chain": "Organization?_id=o12399&partof:Organization.name=Klinik",
    "_id with a broad _has": "Organization?_id=o12300&_has:Organization:partof:name=Klinik",
    "identifier": f"Organization?identifier={SYSTEM}|org-777",
    "composite code and value range": "Observation?code-value-quantity=http://loinc.org|8867-4$gt119",
    "a code of scattered resources": "Organization?type=k7",
    "a code of scattered resources, counted": "Organization?type=k7&_total=accurate",
    "a prefix most resources have": "Organization?name=Klinik",
    "a chain and a code": "Organization?partof:Organization.name=Sygehus&type=k7",
    # A value no resource has: an anti-join would scan the whole index for a first row of it.
    "a prefix and a :not of a value nobody has": f"Organization?name=Klinik&type:not={SYSTEM}|none",
    "a :missing and a :not of a value nobody has": f"Organization?name:missing=false&type:not={SYSTEM}|none",
}


async def fill(conn: asyncpg.Connection) -> None:
    await conn.execute(NAME_FUNCTION)
    await conn.execute(FILL, ORGANIZATIONS, EXTRACTOR)
    for code, statement in INDEX_ROWS.items():
        await conn.execute(statement, sp_hash("Organization", code), ORGANIZATIONS)
    await conn.execute(OBSERVATIONS, ORGANIZATIONS, EXTRACTOR)
    await conn.execute(COMPOSITES, sp_hash("Observation", "code-value-quantity"), ORGANIZATIONS)
    await conn.execute("VACUUM ANALYZE")  # as autovacuum leaves loaded tables, for index-only scans


async def _filled_copy(server_dsn: str, template: str, name: str) -> None:
    await admin(server_dsn, clone_statement(name, template))
    conn = await asyncpg.connect(with_database(server_dsn, name))
    try:
        await fill(conn)
    finally:
        await conn.close()


@pytest.fixture(scope="module")
def plans_database(server_dsn: str, template_database: str) -> Iterator[str]:
    """One filled database for the module: its tests only read (EXPLAIN ANALYZE of SELECTs, and searches)."""
    name = f"fhir_plans_{uuid.uuid4().hex[:12]}"
    asyncio.run(_filled_copy(server_dsn, template_database, name))
    try:
        yield with_database(server_dsn, name)
    finally:
        asyncio.run(admin(server_dsn, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
async def filled(plans_database: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(plans_database)
    yield conn
    await conn.close()


@pytest.fixture
async def client(aiohttp_client, plans_database: str) -> TestClient:
    return await aiohttp_client(create_app(search_settings(plans_database)))


def query(search: str) -> SearchQuery:
    context = SearchContext(Registry.builtin(), "http://test/fhir", datetime.now(timezone.utc), False, 20, 1000)
    res_type, _, items = search.partition("?")
    pairs = [tuple(pair.split("=", 1)) for pair in items.split("&")]
    return parse_search(res_type, [*pairs, ("_count", "20")], context)  # type: ignore[list-item]


async def executed_plans(conn: asyncpg.Connection, search: str) -> list[dict[str, Any]]:
    """The executed plans of the page statement (with the includes, when the query has any) and the count
    (`_total=accurate`), as the service builds them."""
    parsed = query(search)
    statements = [first_statement(parsed, 1001)]
    statements += [count_statement(parsed)] if parsed.total == "accurate" else []
    plans = []
    for statement in statements:
        explained = await conn.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {statement.text}", *statement.params)
        plans.append(orjson.loads(explained)[0]["Plan"])
    return plans


def nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", ()):
        yield from nodes(child)


def table_reads(plans: list[dict[str, Any]]) -> list[tuple[str, str, str, int]]:
    """(node type, table, alias, rows read) of every node that reads `resource` or an index table: the rows it
    returned or filtered out, at least one per loop (a probe that finds nothing still reads the index)."""
    return [(node["Node Type"], node["Relation Name"], node["Alias"],
             max(node["Actual Rows"] + node.get("Rows Removed by Filter", 0), 1) * node["Actual Loops"])
            for plan in plans for node in nodes(plan)
            if node.get("Relation Name", "") == "resource" or node.get("Relation Name", "").startswith("idx_")]


@pytest.mark.parametrize("shape", SHAPES)
async def test_search_plans_read_what_the_page_needs(filled: asyncpg.Connection, client: TestClient,
                                                     shape: str) -> None:
    reads = table_reads(await executed_plans(filled, SHAPES[shape]))
    assert reads, "the plan reads the tables"
    assert not [read for read in reads if read[0] == "Seq Scan"], reads
    assert max(rows for _type, _table, _alias, rows in reads) <= MOST_ROWS_READ, reads
    assert sum(rows for _type, table, alias, rows in reads if (table, alias) == ("resource", "r")) <= PAGE_ROWS, reads
    response = await client.get(f"/fhir/{SHAPES[shape]}&_count=20")
    assert response.status == 200, await response.text()
    assert (await response.json())["entry"], "the search finds resources"


async def test_a_code_and_quantity_composite_runs_no_function_per_row(filled: asyncpg.Connection) -> None:
    """Its token and quantity parts are compared on their JSON fields, not read back through jsonb_to_record."""
    plans = await executed_plans(filled, SHAPES["composite code and value range"])
    assert [node["Node Type"] for plan in plans for node in nodes(plan) if node["Node Type"] == "Function Scan"] == []


async def test_a_code_and_quantity_composite_compares_the_code_system_in_the_index(
        filled: asyncpg.Connection) -> None:
    """The code's system is in idx_composite_quantity's key (sql/0016): no row of the range is read from the table
    to parse its JSON again for the system."""
    plans = await executed_plans(filled, SHAPES["composite code and value range"])
    scans = [node for plan in plans for node in nodes(plan) if node.get("Relation Name") == "idx_composite"]
    assert [node.get("Index Name") for node in scans] == ["idx_composite_quantity"]
    assert "'system'" in scans[0]["Index Cond"] and "Filter" not in scans[0], scans[0]


async def test_a_token_search_reads_its_matches_from_the_index(filled: asyncpg.Connection) -> None:
    """idx_token_value holds res_id (sql/0014): the 200 scattered matches are read from the index, not from
    idx_token's table (but for pages VACUUM has not marked all-visible yet: how many varies from run to run)."""
    plans = await executed_plans(filled, SHAPES["a code of scattered resources"])
    token_reads = [(node["Node Type"], node["Index Name"]) for plan in plans for node in nodes(plan)
                   if node.get("Relation Name") == "idx_token"]
    assert token_reads == [("Index Only Scan", "idx_token_value")]


async def test_the_shapes_find_what_the_data_holds(filled: asyncpg.Connection, client: TestClient) -> None:
    async def ids(items: str) -> list[str]:
        response = await client.get(f"/fhir/{items}")
        assert response.status == 200, await response.text()
        return [entry["resource"]["id"] for entry in (await response.json()).get("entry", [])]

    assert await ids(SHAPES["_id with _include"]) == ["o12345", "o12300"]
    assert await ids(SHAPES["_lastUpdated sorted newest first"] + "&_count=3") == ["o30000", "o29999", "o29998"]
    assert await ids(SHAPES["_lastUpdated sorted oldest first"] + "&_count=3") == ["o1", "o2", "o3"]
    assert await ids(SHAPES["one-level chain"] + "&_count=2") == ["o5001", "o5002"]
    assert len(await ids(SHAPES["_revinclude"] + "&_count=1")) == 100  # the parent and its 99 children
    assert await ids(SHAPES["_has"]) == ["o4500"]
    assert await ids(SHAPES["_id with a broad chain"]) == ["o12399"]
    assert await ids(SHAPES["_id with a broad _has"]) == ["o12300"]
    matching = [f"b{n}" for n in range(1, 30_001) if n % 5 == 0 and 50 + 70 * (n * 7919 % 1000) / 1000 > 119.05]
    assert await ids(SHAPES["composite code and value range"] + "&_count=1000") == matching
    coded = range(7, 30_001, 150)
    assert await ids(SHAPES["a code of scattered resources"] + "&_count=1000") == [f"o{n}" for n in coded]
    assert await ids(SHAPES["a prefix most resources have"] + "&_count=3") == ["o1", "o2", "o3"]
    children = [f"o{n}" for n in coded if n >= 100 and (n - n % 100) % 5000 == 0]  # their parent is a Sygehus
    assert await ids(SHAPES["a chain and a code"] + "&_count=1000") == children
    response = await client.get(f"/fhir/{SHAPES['a code of scattered resources, counted']}")
    assert (await response.json())["total"] == 200


@pytest.mark.parametrize("shape", ["a prefix and a :not of a value nobody has",
                                   "a :missing and a :not of a value nobody has"])
async def test_a_not_is_probed_per_candidate_never_joined_against_its_whole_index(filled: asyncpg.Connection,
                                                                                   shape: str) -> None:
    """An anti-join may walk the whole index for a first row of the `:not` value (at 1,000,000 Organizations,
    `name:missing=false&active:not=false` took 1.7 s so); a probe per candidate grows with the page."""
    plans = await executed_plans(filled, SHAPES[shape])
    assert [node["Node Type"] for plan in plans for node in nodes(plan) if node.get("Join Type") == "Anti"] == []
