"""No search can tie up the database: capped terms and values, repeated terms searched once, a statement
timeout and client disconnects that cancel the query in PostgreSQL, a bounded wait for a pooled connection,
probes that answer meanwhile, and a 503 while the database is down."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from datetime import datetime, timezone
from urllib.parse import parse_qs, urlsplit, urlunsplit

import aiohttp
import asyncpg
import pytest
from aiohttp import web

from service.app import create_app, create_runner
from service.search.query import SearchContext, parse_search
from service.search.registry import Registry
from service.search.sql import page_statement
from tests import tokens
from tests.test_errors import assert_outcome
from tests.test_process import free_port

FORM = {"Content-Type": "application/x-www-form-urlencoded"}
PATIENT = b'{"resourceType":"Patient","name":[{"family":"Alpha"}]}'
# The app's search pages (every page statement starts so, or so with the first round of its includes), as
# pg_stat_activity shows them while they run.
ACTIVE_SEARCHES = """
SELECT pid, wait_event_type FROM pg_stat_activity
WHERE datname = current_database() AND application_name = 'fhir-reindex-service' AND state = 'active'
  AND (query LIKE 'SELECT r.res_id, r.res_type, r.fhir_id, r.body %' OR query LIKE 'WITH page AS %')"""


@asynccontextmanager
async def resource_table_locked(database_url: str) -> AsyncIterator[None]:
    """Every search blocks while this holds the resource table: a slow query on demand, deterministically."""
    holder = await asyncpg.connect(database_url)
    try:
        async with holder.transaction():
            await holder.execute("LOCK TABLE resource IN ACCESS EXCLUSIVE MODE")
            yield
    finally:
        await holder.close()


async def wait_for_searches(db: asyncpg.Connection, count: int, seconds: float = 5.0) -> list[asyncpg.Record]:
    """Until exactly `count` searches of the app are active in PostgreSQL."""
    deadline = time.monotonic() + seconds
    while True:
        rows = await db.fetch(ACTIVE_SEARCHES)
        if len(rows) == count or time.monotonic() > deadline:
            return rows
        await asyncio.sleep(0.05)


async def create_patient(client) -> None:
    response = await client.post("/fhir/Patient", data=PATIENT, headers={"Content-Type": "application/fhir+json"})
    assert response.status == 201


async def test_ten_thousand_repeated_terms_answer_400_within_a_second(client):
    for method, path, body in (("GET", "/fhir/Patient?" + "&".join(["_id=a"] * 10_000), None),
                               ("POST", "/fhir/Patient/_search", "&".join(["name=a"] * 10_000))):
        started = time.perf_counter()
        response = await client.request(method, path, data=body, headers=FORM if body else {})
        outcome = await assert_outcome(response, 400, "too-costly")
        assert time.perf_counter() - started < 1.0
        assert "FHIR_MAX_SEARCH_TERMS" in outcome["issue"][0]["diagnostics"]


async def test_caps_allow_up_to_their_limit_and_name_it_beyond(aiohttp_client, settings):
    client = await aiohttp_client(create_app(settings.model_copy(update={"max_search_terms": 5,
                                                                         "max_search_values": 12})))
    await create_patient(client)
    at_cap = "/fhir/Patient?name=alpha&name=alph&name=alp,x&name=al,y,z&_count=1"  # 5 parameters, 9 values
    response = await client.get(at_cap)
    assert response.status == 200
    bundle = await response.json(content_type=None)
    assert bundle["total"] == 1
    over_terms = await client.get(at_cap + "&_sort=_id")
    assert "at most 5 are allowed (FHIR_MAX_SEARCH_TERMS)" in (
        await assert_outcome(over_terms, 400, "too-costly"))["issue"][0]["diagnostics"]
    over_values = await client.get("/fhir/Patient?_id=" + ",".join(f"p{i}" for i in range(13)))
    assert "at most 12 are allowed in all (FHIR_MAX_SEARCH_VALUES)" in (
        await assert_outcome(over_values, 400, "too-costly"))["issue"][0]["diagnostics"]
    # A paging link repeats the request's parameters and adds its _cursor: it stays within the cap.
    await create_patient(client)
    first = await (await client.get(at_cap)).json(content_type=None)
    next_url = next(link["url"] for link in first["link"] if link["relation"] == "next")
    assert (await client.get(urlsplit(next_url).path + "?" + urlsplit(next_url).query)).status == 200


def test_repeated_identical_terms_and_values_become_one_condition():
    context = SearchContext(Registry.builtin(), "https://fhir.example/fhir", datetime.now(timezone.utc), False, 20,
                            100, max_terms=30, max_values=1000)
    repeated = parse_search("Patient", [("name", "a,A,a")] * 20 + [("name", "A")] * 10, context)
    once = parse_search("Patient", [("name", "a")], context)
    assert repeated.terms == once.terms
    assert page_statement(repeated) == page_statement(once)


async def test_repeated_terms_up_to_the_cap_are_fast(client):
    for _ in range(3):
        await create_patient(client)
    started = time.perf_counter()
    response = await client.get("/fhir/Patient?" + "&".join(["name=alpha", "name=ALPHA"] * 15))
    assert response.status == 200
    assert (await response.json(content_type=None))["total"] == 3
    assert time.perf_counter() - started < 1.0


# A search of one statement runs alone (asyncpg cancels it at the timeout); one of more runs in a snapshot (each
# statement with a local statement_timeout of what is left).
ONE_STATEMENT_OR_MORE = pytest.mark.parametrize("query", ["name=a", "name=a&_total=accurate",
                                                          "name=a&_include=Patient:organization"])


@ONE_STATEMENT_OR_MORE
async def test_search_timeout_cancels_the_query_in_postgresql(aiohttp_client, settings, database_url, db, query):
    client = await aiohttp_client(create_app(settings.model_copy(update={"search_timeout_ms": 300})))
    async with resource_table_locked(database_url):
        started = time.perf_counter()
        response = await client.get(f"/fhir/Patient?{query}")
        elapsed = time.perf_counter() - started
        outcome = await assert_outcome(response, 503, "timeout")
        assert "FHIR_SEARCH_TIMEOUT_MS" in outcome["issue"][0]["diagnostics"]
        assert 0.3 <= elapsed < 3
        # Cancelled by PostgreSQL itself, while the lock it waited for is still held (a query that was not would
        # wait on it for good; the backend may take a moment to report the cancelled statement as ended).
        assert await wait_for_searches(db, 0, seconds=3) == []
        assert (await client.get("/fhir/metadata")).status == 200


@ONE_STATEMENT_OR_MORE
async def test_client_disconnect_cancels_the_query_in_postgresql(settings, db, database_url, query):
    """Through the runner `serve` uses (aiohttp's test server would cancel handlers whatever it is told)."""
    patient = settings.model_copy(update={"search_timeout_ms": 60_000})
    runner = create_runner(create_app(patient), patient)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with aiohttp.ClientSession(headers=tokens.bearer(tokens.hs256(tokens.admin_claims()))) as session:
            async with resource_table_locked(database_url):
                request = asyncio.create_task(session.get(f"http://127.0.0.1:{port}/fhir/Patient?{query}"))
                waiting = await wait_for_searches(db, 1)
                assert [row["wait_event_type"] for row in waiting] == ["Lock"]
                request.cancel()  # the client goes away: its connection closes
                with suppress(asyncio.CancelledError):
                    await request
                # Gone from PostgreSQL within a moment, long before the 60 s timeout, with the lock still held.
                assert await wait_for_searches(db, 0, seconds=3) == []
    finally:
        await runner.cleanup()


async def test_exhausted_pool_is_503_while_probes_answer(aiohttp_client, settings, database_url, db):
    # Five connections: the job engine's pool takes three (no workers), two are left for requests.
    client = await aiohttp_client(create_app(settings.model_copy(update={
        "pool_min_size": 1, "pool_max_size": 5, "pool_acquire_timeout_ms": 300})))
    async with resource_table_locked(database_url):
        blocked = [asyncio.create_task(client.get(f"/fhir/Patient?name=a{i}")) for i in range(2)]
        assert len(await wait_for_searches(db, 2)) == 2
        started = time.perf_counter()
        read = await client.get("/fhir/Organization/any")
        outcome = await assert_outcome(read, 503, "throttled")
        assert read.headers["Retry-After"] == "1"
        assert "FHIR_POOL_ACQUIRE_TIMEOUT_MS" in outcome["issue"][0]["diagnostics"]
        assert 0.3 <= time.perf_counter() - started < 3
        for probe in ("/readyz", "/metrics"):
            started = time.perf_counter()
            assert (await client.get(probe)).status == 200
            assert time.perf_counter() - started < 0.5
    assert [response.status for response in await asyncio.gather(*blocked)] == [200, 200]


class Relay:
    """A TCP relay between the app and PostgreSQL: cutting it is, for the app, the database going down
    (its connections drop, new ones are refused); restoring it brings the database back."""

    def __init__(self, database_url: str) -> None:
        self.parts = urlsplit(database_url)
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        await self._server.wait_closed()

    async def _relay(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        server_reader, server_writer = await self._connect()
        self._writers |= {client_writer, server_writer}
        await asyncio.gather(self._pipe(client_reader, server_writer), self._pipe(server_reader, client_writer))

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """To the server of the URL: its TCP port, or its Unix socket (an embedded server's `host=/dir`)."""
        port = self.parts.port or 5432
        socket_dir = parse_qs(self.parts.query).get("host", [""])[0]
        if socket_dir.startswith("/"):
            return await asyncio.open_unix_connection(f"{socket_dir}/.s.PGSQL.{port}")
        return await asyncio.open_connection(self.parts.hostname, port)

    def url(self) -> str:
        """The URL that reaches the server through the relay (over TCP, whatever the server listens on)."""
        query = "&".join(f"{k}={v}" for k, vs in parse_qs(self.parts.query).items() if k != "host" for v in vs)
        return urlunsplit(self.parts._replace(netloc=f"{self.parts.username}@127.0.0.1:{self.port}", query=query))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with suppress(ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.transport.abort()
        self._writers.discard(writer)


async def test_database_down_is_503_with_retry_after_and_recovers(aiohttp_client, settings, database_url, db):
    relay = Relay(database_url)
    await relay.start()
    client = await aiohttp_client(create_app(settings.model_copy(update={"database_url": relay.url()})))
    assert (await client.put("/fhir/Organization/org-1", data=b'{"resourceType":"Organization","id":"org-1"}',
                             headers={"Content-Type": "application/fhir+json"})).status == 201
    async with resource_table_locked(database_url):  # a search in flight when the database goes away
        in_flight = asyncio.create_task(client.get("/fhir/Organization?name=b"))
        assert len(await wait_for_searches(db, 1)) == 1
        await relay.cut()
        await assert_outcome(await in_flight, 503, "no-store")
    for method, path in (("GET", "/fhir/Organization/org-1"), ("GET", "/fhir/Organization?name=a"),
                         ("PUT", "/fhir/Organization/org-1"), ("GET", "/fhir/_history")):
        body = b'{"resourceType":"Organization","id":"org-1"}' if method == "PUT" else None
        response = await client.request(method, path, data=body, headers={"Content-Type": "application/fhir+json"})
        await assert_outcome(response, 503, "no-store")
        assert response.headers["Retry-After"] == "5"
    assert (await client.get("/readyz")).status == 503
    assert await db.fetchval("SELECT version FROM resource WHERE fhir_id = 'org-1'") == 1
    await relay.start()  # the database is back: the pool reconnects on the next request
    assert (await client.get("/fhir/Organization/org-1")).status == 200
    assert (await client.get("/readyz")).status == 200
    await relay.cut()
