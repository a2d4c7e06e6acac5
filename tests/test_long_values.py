"""Very long values are stored whole and indexed by a bounded prefix (as HAPI), so no index entry can exceed
PostgreSQL's b-tree limit: a 900,000-character string was a 500. Searches match on the same prefix."""

from __future__ import annotations

from urllib.parse import urlencode

import orjson

from service.search.bounds import STRING_LENGTH, TOKEN_LENGTH, URI_LENGTH, URL_LENGTH

FHIR_JSON = {"Content-Type": "application/fhir+json"}
LONG = 900_000


def long_text(seed: str, separator: str = " ") -> str:
    """Varied text (a repeated letter would compress under the limit): the seed, then non-ASCII words."""
    return separator.join(f"{seed}{n}wörd" for n in range(LONG // 8))[:LONG]


async def test_very_long_values_are_stored_whole_and_indexed_by_a_prefix(client, db):
    family, code, system = long_text("Family"), long_text("code"), "http://example.org/" + long_text("system", "/")
    uri, url = "http://example.org/" + long_text("uri", "/"), "http://other.example/fhir/" + long_text("ref", "/")
    patient = {"resourceType": "Patient", "id": "long", "name": [{"family": family, "given": [long_text("Given")]}],
               "identifier": [{"system": system, "value": code}],
               "meta": {"source": uri}, "managingOrganization": {"reference": url}}
    response = await client.put("/fhir/Patient/long", data=orjson.dumps(patient), headers=FHIR_JSON)
    assert response.status == 201, (await response.text())[:500]

    stored = await (await client.get("/fhir/Patient/long")).json(content_type=None)
    assert stored["name"][0]["family"] == family and stored["identifier"][0]["value"] == code
    assert stored["meta"]["source"] == uri and stored["managingOrganization"]["reference"] == url
    longest = await db.fetchrow(
        "SELECT (SELECT max(greatest(length(normalized), length(exact))) FROM idx_string) AS string, "
        "(SELECT max(greatest(length(value), length(system))) FROM idx_token) AS token, "
        "(SELECT max(length(uri)) FROM idx_uri) AS uri, "
        "(SELECT max(length(target_url)) FROM idx_reference) AS url")
    assert dict(longest) == {"string": STRING_LENGTH, "token": TOKEN_LENGTH, "uri": URI_LENGTH, "url": URL_LENGTH}

    # The full value, or any prefix of it, finds the resource: both are compared on the indexed prefix.
    for name, value in (("family", family[:50]), ("family:exact", family[:5000]),
                        ("identifier", f"{system[:3000]}|{code}"), ("_source", uri), ("organization", url[:2000])):
        found = await (await client.post("/fhir/Patient/_search", data=urlencode({name: value}),
                                          headers={"Content-Type": "application/x-www-form-urlencoded"})).json(
            content_type=None)
        assert [entry["resource"]["id"] for entry in found.get("entry", [])] == ["long"], name


async def test_a_reference_id_longer_than_an_id_is_not_a_local_reference(client, db):
    patient = {"resourceType": "Patient", "id": "p", "managingOrganization": {"reference": "Organization/" + "x" * 65}}
    response = await client.put("/fhir/Patient/p", data=orjson.dumps(patient), headers=FHIR_JSON)
    assert response.status == 201
    assert await db.fetchval("SELECT count(*) FROM idx_reference") == 0
