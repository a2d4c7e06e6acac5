"""Numbers keep the spelling the client sent (FHIR decimals carry their precision) through create,
update, `load`, read, vread, history and search, in every version; searches still find them by value."""

from __future__ import annotations

import json
from decimal import Decimal

import orjson
import pytest

from tests.conftest import run_load

FHIR_JSON = {"Content-Type": "application/fhir+json"}
META = b'{"profile":["http://example.org/p"]}'
# Compact members after resourceType, id and meta: the stored form. Numbers orjson would respell sit in
# nested objects and arrays; the strings hold look-alikes (which are no numbers) and escaped quotes.
MEMBERS_V1 = (
    b'"status":"final","code":{"text":"1.50 mg at 10:30:00.5, [0.10]"},'
    b'"valueQuantity":{"value":1.50,"unit":"mg","system":"http://unitsofmeasure.org","code":"mg"},'
    b'"component":[{"code":{"text":"a"},"valueQuantity":{"value":0.10}},'
    b'{"code":{"text":"b"},"valueQuantity":{"value":1.0e2}},{"code":{"text":"c"},"valueQuantity":{"value":-0.0}},'
    b'{"code":{"text":"d"},"valueQuantity":{"value":1E-7}}],'
    b'"extension":[{"url":"http://example.org/big","valueDecimal":123456789012345678901234567890},'
    b'{"url":"http://example.org/outer","extension":[{"url":"inner","valueDecimal":2.500}]}],'
    b'"referenceRange":[{"low":{"value":-0},"high":{"value":1.5},"text":"say \\"0.50\\" \\\\"}]}'
)
MEMBERS_V2 = (
    b'"status":"amended","code":{"text":"v2"},"valueQuantity":{"value":3.10,"unit":"mg"},'
    b'"component":[{"code":{"text":"e"},"valueQuantity":{"value":4.0E+1}},{"code":{"text":"f"},"valueInteger":7}],'
    b'"extension":[{"url":"http://example.org/big","valueDecimal":-98765432109876543210.000}]}'
)


def spaced(members: bytes) -> bytes:
    """The members as a client might send them, with whitespace (no string above holds `,"` or `":`)."""
    return members.replace(b',"', b',\n  "').replace(b'":', b'": ')


def sent(members: bytes, fhir_id: str | None = None) -> bytes:
    own_id = b"" if fhir_id is None else b'"id": "%s", ' % fhir_id.encode()
    return b'{"resourceType": "Observation", ' + own_id + b'"meta": ' + META + b",\n  " + spaced(members)


def stored(members: bytes, served: bytes) -> bytes:
    """What must be served: the members as sent, after the server's id and meta (taken from `served`)."""
    meta = orjson.loads(served)["meta"]
    server_part = orjson.dumps({"resourceType": "Observation", "id": orjson.loads(served)["id"],
                                "meta": {**orjson.loads(META), "versionId": meta["versionId"],
                                         "lastUpdated": meta["lastUpdated"]}})
    return server_part[:-1] + b"," + members


def number_texts(body: bytes) -> list[str]:
    """Every number of a JSON text as spelled there, in order (the standard library's parse hooks)."""
    texts: list[str] = []
    json.loads(body, parse_float=texts.append, parse_int=texts.append)
    return texts


def as_text(body: bytes) -> dict:
    """A JSON text parsed with its numbers left as their text."""
    return json.loads(body, parse_float=str, parse_int=str)


async def body_of(client, url: str, status: int = 200) -> bytes:
    response = await client.get(url)
    assert response.status == status, await response.text()
    return await response.read()


async def test_rest_interactions_keep_every_number_as_sent(client):
    created = await client.post("/fhir/Observation", data=sent(MEMBERS_V1), headers=FHIR_JSON)
    assert created.status == 201, await created.text()
    first = await created.read()
    expected_v1 = stored(MEMBERS_V1, first)
    assert first == expected_v1
    assert number_texts(first) == ["1.50", "0.10", "1.0e2", "-0.0", "1E-7", "123456789012345678901234567890",
                                   "2.500", "-0", "1.5"]
    url = f"/fhir/Observation/{orjson.loads(first)['id']}"
    updated = await client.put(url, data=sent(MEMBERS_V2, orjson.loads(first)["id"]), headers=FHIR_JSON)
    assert updated.status == 200, await updated.text()
    expected_v2 = stored(MEMBERS_V2, await updated.read())
    assert await updated.read() == expected_v2
    assert await body_of(client, url) == expected_v2
    assert await body_of(client, f"{url}/_history/1") == expected_v1
    assert await body_of(client, f"{url}/_history/2") == expected_v2
    history = await body_of(client, f"{url}/_history")
    assert expected_v1 in history and expected_v2 in history
    assert expected_v2 in await body_of(client, f"/fhir/Observation?_id={url.rsplit('/', 1)[1]}")
    assert expected_v2 in await body_of(client, "/fhir/Observation?value-quantity=3.1")
    # Re-encoded on the way out (indented, or cut to some elements): the numbers still as sent.
    pretty = await body_of(client, f"{url}?_pretty=true")
    assert pretty != expected_v2 and number_texts(pretty) == number_texts(expected_v2)
    subset = as_text(await body_of(client, "/fhir/Observation?_elements=valueQuantity,extension"))["entry"][0]
    assert subset["resource"]["valueQuantity"]["value"] == "3.10"
    assert subset["resource"]["extension"][0]["valueDecimal"] == "-98765432109876543210.000"


async def test_load_keeps_every_number_as_sent(client, database_url, tmp_path):
    source = tmp_path / "decimals.ndjson"
    # One line a version: the same id again is an update.
    lines = [sent(members, "dec-load").replace(b"\n", b"") for members in (MEMBERS_V1, MEMBERS_V2)]
    source.write_bytes(b"\n".join(lines) + b"\n")
    result = run_load(database_url, str(source))
    assert result.returncode == 0, result.stdout + result.stderr
    url = "/fhir/Observation/dec-load"
    first = await body_of(client, f"{url}/_history/1")
    assert first == stored(MEMBERS_V1, first)
    current = await body_of(client, url)
    assert current == stored(MEMBERS_V2, current)
    assert await body_of(client, f"{url}/_history/2") == current
    history = await body_of(client, f"{url}/_history")
    assert first in history and current in history
    assert current in await body_of(client, "/fhir/Observation?value-quantity=ge3.1")


async def test_load_of_a_bundle_keeps_every_number_as_sent(client, database_url, tmp_path):
    source = tmp_path / "decimals.json"
    entries = b",".join(b'{"fullUrl":"urn:uuid:1","resource":' + sent(MEMBERS_V1, f"dec-b{n}") + b"}" for n in (1, 2))
    source.write_bytes(b'{"resourceType":"Bundle","type":"collection","entry":[' + entries + b"]}")
    result = run_load(database_url, str(source))
    assert result.returncode == 0, result.stdout + result.stderr
    for n in (1, 2):
        body = await body_of(client, f"/fhir/Observation/dec-b{n}")
        assert body == stored(MEMBERS_V1, body)


async def test_duplicate_keys_keep_the_last_value_as_before(client):
    body = (b'{"resourceType":"Observation","status":"final","code":{"text":"a"},'
            b'"valueQuantity":{"value":1.50,"value":2.50}}')
    created = await client.post("/fhir/Observation", data=body, headers=FHIR_JSON)
    assert created.status == 201
    assert number_texts(await created.read()) == ["2.50"]
    found = as_text(await body_of(client, "/fhir/Observation?value-quantity=2.5"))
    assert [entry["resource"]["valueQuantity"] for entry in found["entry"]] == [{"value": "2.50"}]


@pytest.mark.parametrize("body", [
    b'{"resourceType":"Observation","valueQuantity":{"value":1.50},"x":NaN}',
    b'{"resourceType":"Observation","valueQuantity":{"value":1.50},"x":-Infinity}',
    b'{"resourceType":"Observation","valueQuantity":{"value":1.50},"x":"\\ud800"}',
    b'{"resourceType":"Observation","valueQuantity":{"value":1.50},"x":1E400}',
    b'{"resourceType":"Observation","valueQuantity":{"value":1.50},}',
    '{"resourceType":"Observation","valueQuantity":{"value":1.50}}'.encode("utf-16"),
], ids=["NaN", "-Infinity", "lone surrogate", "overflowing exponent", "trailing comma", "UTF-16"])
async def test_json_orjson_refuses_is_still_a_400(client, db, body):
    for response in (await client.post("/fhir/Observation", data=body, headers=FHIR_JSON),
                     await client.put("/fhir/Observation/x", data=body, headers=FHIR_JSON)):
        assert response.status == 400
        outcome = await response.json(content_type=None)
        assert outcome["issue"][0]["code"] == "invalid"
        assert "Failed to parse the request body as JSON" in outcome["issue"][0]["diagnostics"]
    assert await db.fetchval("SELECT count(*) FROM resource") == 0


# (query on the value, which stored values it must find): the FHIR implicit range of the query's precision.
SEARCHES = [
    ("1.5", lambda v: Decimal("1.45") <= v < Decimal("1.55")),
    ("1.50", lambda v: Decimal("1.495") <= v < Decimal("1.505")),
    ("0.1", lambda v: Decimal("0.05") <= v < Decimal("0.15")),
    ("100", lambda v: Decimal("99.5") <= v < Decimal("100.5")),
    ("1e2", lambda v: Decimal("50") <= v < Decimal("150")),
    ("0", lambda v: Decimal("-0.5") <= v < Decimal("0.5")),
    ("1e-7", lambda v: Decimal("0.00000005") <= v < Decimal("0.00000015")),
    ("2.5", lambda v: Decimal("2.45") <= v < Decimal("2.55")),
    ("lt0.001", lambda v: v < Decimal("0.001")),
    ("gt2.4", lambda v: v > Decimal("2.4")),
    ("le0", lambda v: v <= 0),
]
SPELLINGS = ["1.50", "1.5", "0.10", "1.0e2", "100", "-0.0", "-0", "1E-7", "2.500"]


async def test_searches_find_values_whatever_their_spelling(client):
    made: dict[str, Decimal] = {}
    for text in SPELLINGS:
        quantity = b'{"value":%s,"unit":"mg"}' % text.encode()
        body = (b'{"resourceType":"Observation","status":"final","code":{"text":"q"},"valueQuantity":%s,'
                b'"component":[{"code":{"text":"c"},"valueQuantity":%s}]}' % (quantity, quantity))
        response = await client.post("/fhir/Observation", data=body, headers=FHIR_JSON)
        assert response.status == 201
        made[orjson.loads(await response.read())["id"]] = Decimal(text)
    for code in ("value-quantity", "component-value-quantity"):
        for query, matches in SEARCHES:
            bundle = orjson.loads(await body_of(client, f"/fhir/Observation?{code}={query}&_count=100"))
            found = {entry["resource"]["id"] for entry in bundle.get("entry", [])}
            assert found == {fhir_id for fhir_id, value in made.items() if matches(value)}, f"{code}={query}"
