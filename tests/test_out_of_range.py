"""Values a client sends that the server cannot represent are a 4xx OperationOutcome naming the problem,
never a 500, and nothing is written: search values out of range, cursors and version ids beyond their
columns, bodies whose encoding lies, and tokens whose times are not numbers."""

from __future__ import annotations

import base64
import gzip
import hashlib
import hmac
import time

import orjson
import pytest
from aiohttp import web
from jose import jws

from service.app import create_app
from tests import tokens
from tests.test_errors import assert_outcome, store_counts

FHIR_JSON = "application/fhir+json"
FORM = "application/x-www-form-urlencoded"
ORG = b'{"resourceType":"Organization","name":"Acme"}'


def cursor(data: dict) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(data)).rstrip(b"=").decode()


def raw_cursor(text: str) -> str:
    """A cursor of JSON text orjson would not write (numbers beyond a double)."""
    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()


OUT_OF_RANGE = [
    # (name, method, path, body, headers, status, code)
    ("date ap9999", "GET", "/fhir/Patient?birthdate=ap9999", None, {}, 400, "invalid"),
    ("date ap0001", "GET", "/fhir/Patient?birthdate=ap0001", None, {}, 400, "invalid"),
    ("date offset before year 1", "GET", "/fhir/Patient?birthdate=lt0001-01-01T00:00:00%2B14:00", None, {}, 400, "invalid"),
    ("quantity 1e999999999", "GET", "/fhir/Observation?value-quantity=1e999999999", None, {}, 400, "invalid"),
    ("quantity with unit 1e999999999", "GET", "/fhir/Observation?value-quantity=gt1e999999999||mg", None, {}, 400, "invalid"),
    ("number ap1e999999", "GET", "/fhir/RiskAssessment?probability=ap1e999999", None, {}, 400, "invalid"),
    ("number 1e-999999", "GET", "/fhir/RiskAssessment?probability=1e-999999", None, {}, 400, "invalid"),
    ("cursor huge r", "GET", "/fhir/Patient?_cursor=" + raw_cursor('{"d":"n","v":[],"r":99999999999999999999}'), None, {}, 400, "invalid"),
    ("cursor r beyond bigint", "GET", "/fhir/Patient?_cursor=" + cursor({"d": "n", "v": [], "r": 2**64 - 1}), None, {}, 400, "invalid"),
    ("cursor negative huge r", "GET", "/fhir/Patient?_cursor=" + raw_cursor('{"d":"n","v":[],"r":-99999999999999999999}'), None, {}, 400, "invalid"),
    ("cursor r 1e400", "GET", "/fhir/Patient?_cursor=" + raw_cursor('{"d":"n","v":[],"r":1e400}'), None, {}, 400, "invalid"),
    ("cursor number 1e999999", "GET", "/fhir/RiskAssessment?_sort=probability&_cursor=" + cursor({"d": "n", "v": ["1e999999"], "r": 1}), None, {}, 400, "invalid"),
    ("cursor date before year 1", "GET", "/fhir/Patient?_sort=birthdate&_cursor=" + cursor({"d": "p", "v": ["0001-01-01T00:00:00+14:00"], "r": 1}), None, {}, 400, "invalid"),
    ("cursor date without zone", "GET", "/fhir/Patient?_sort=birthdate&_cursor=" + cursor({"d": "n", "v": ["2020-01-01T00:00:00"], "r": 1}), None, {}, 400, "invalid"),
    ("cursor text with NUL", "GET", "/fhir/Patient?_sort=_id&_cursor=" + cursor({"d": "n", "v": ["a\u0000b"], "r": 1}), None, {}, 400, "invalid"),
    ("vread huge version", "GET", "/fhir/Organization/org-1/_history/99999999999999999999", None, {}, 400, "invalid"),
    ("vread version beyond integer", "GET", "/fhir/Organization/org-1/_history/2147483648", None, {}, 400, "invalid"),
    ("vread superscript digit", "GET", "/fhir/Organization/org-1/_history/%C2%B2", None, {}, 400, "invalid"),
    ("history huge cursor", "GET", "/fhir/Organization/_history?_cursor=99999999999999999999", None, {}, 400, "invalid"),
    ("history since before year 1", "GET", "/fhir/_history?_since=0001-01-01T00:00:00%2B14:00", None, {}, 400, "invalid"),
    ("count superscript digit", "GET", "/fhir/Patient?_count=%C2%B2", None, {}, 400, "invalid"),
    ("If-Match superscript digit", "PUT", "/fhir/Organization/org-1", b'{"resourceType":"Organization","id":"org-1"}', {"If-Match": 'W/"\u00b2"'.encode().decode("latin-1")}, 400, "invalid"),
    ("gzip header on plain body", "POST", "/fhir/Organization", ORG, {"Content-Encoding": "gzip"}, 400, "invalid"),
    ("gzip header on plain update", "PUT", "/fhir/Organization/org-1", b'{"resourceType":"Organization","id":"org-1"}', {"Content-Encoding": "gzip"}, 400, "invalid"),
    ("truncated gzip body", "POST", "/fhir/Organization", gzip.compress(ORG)[:-12], {"Content-Encoding": "gzip"}, 400, "invalid"),
    ("deflate header on plain body", "POST", "/fhir/Organization", ORG, {"Content-Encoding": "deflate"}, 400, "invalid"),
    ("form body not UTF-8", "POST", "/fhir/Patient/_search", b"name=\xff\xfe", {"Content-Type": FORM}, 400, "invalid"),
    ("form body percent-encoded non-UTF-8", "POST", "/fhir/Patient/_search", b"name=%FF", {"Content-Type": FORM}, 400, "invalid"),
    ("form body in another charset", "POST", "/fhir/Patient/_search", b"name=a", {"Content-Type": FORM + "; charset=latin-1"}, 415, "not-supported"),
    ("form body in an unknown charset", "POST", "/fhir/Patient/_search", b"name=a", {"Content-Type": FORM + "; charset=x-none"}, 415, "not-supported"),
    ("gzip header on plain form body", "POST", "/fhir/Patient/_search", b"name=a", {"Content-Type": FORM, "Content-Encoding": "gzip"}, 400, "invalid"),
]


@pytest.mark.parametrize(("name", "method", "path", "body", "headers", "status", "code"), OUT_OF_RANGE,
                         ids=[case[0] for case in OUT_OF_RANGE])
async def test_out_of_range_request_is_refused_and_changes_nothing(client, db, name, method, path, body, headers,
                                                                   status, code):
    created = await client.put("/fhir/Organization/org-1", data=b'{"resourceType":"Organization","id":"org-1"}',
                               headers={"Content-Type": FHIR_JSON})
    assert created.status == 201
    before = await store_counts(db)
    sent = {"Content-Type": FHIR_JSON, **headers} if body is not None else headers
    response = await client.request(method, path, data=body, headers=sent)
    await assert_outcome(response, status, code)
    assert await store_counts(db) == before


async def test_extreme_but_valid_values_are_searched(client):
    """The edges of the ranges still work: the refusals above are about what cannot be represented."""
    for query in ("Patient?birthdate=ap2000", "Patient?birthdate=9999", "Patient?birthdate=lt0001-01-01",
                  "Observation?value-quantity=1e999", "RiskAssessment?probability=1e-999",
                  "Patient?_sort=birthdate&_cursor=" + cursor({"d": "n", "v": ["9999-12-31T23:59:59+00:00"], "r": 1}),
                  "Patient?_cursor=" + cursor({"d": "n", "v": [], "r": 2**63 - 1}),
                  "Patient?_count=99999999999999999999999"):
        response = await client.get(f"/fhir/{query}")
        assert response.status == 200, (query, await response.text())
        assert (await response.json(content_type=None))["resourceType"] == "Bundle"


def _segment(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def _payload(time_claim: str, literal: str) -> str:
    """Valid admin claims as JSON text, with one time claim spelled `literal` (JSON no encoder writes)."""
    claims = tokens.admin_claims()
    claims[time_claim] = "PLACEHOLDER"
    return orjson.dumps(claims).decode().replace('"PLACEHOLDER"', literal)


def _hs256(payload: str) -> str:
    signing_input = _segment(b'{"alg":"HS256","typ":"JWT"}') + b"." + _segment(payload.encode())
    signature = hmac.new(tokens.HS256_SECRET.encode(), signing_input, hashlib.sha256).digest()
    return (signing_input + b"." + _segment(signature)).decode()


def _unsigned(payload: str) -> str:
    return (_segment(b'{"alg":"none"}') + b"." + _segment(payload.encode()) + b".").decode()


def _rs256(payload: str) -> str:
    return jws.sign(payload.encode(), KEY.private_pem, {"kid": KEY.kid}, "RS256")


KEY = tokens.SigningKey.generate("limits-key")
SIGNERS = {"hs256": _hs256, "unsigned": _unsigned, "jwks": _rs256}
FUTURE = str(int(time.time()) + 3600)
FUTURE_STRING = f'"{FUTURE}"'
BAD_TIMES = [("exp", "1e400"), ("nbf", "1e400"), ("iat", "1e400"), ("exp", "-1e400"), ("exp", FUTURE_STRING),
             ("nbf", '"0"'), ("iat", '"0"')]


async def _certs(request: web.Request) -> web.Response:
    return web.json_response({"keys": [KEY.public_jwk()]})


@pytest.fixture
async def jwks_url(aiohttp_server) -> str:
    app = web.Application()
    app.router.add_get("/certs", _certs)
    return str((await aiohttp_server(app)).make_url("/certs"))


@pytest.mark.parametrize("mode", ["hs256", "unsigned", "jwks"])
# Ids name the value's shape, not the value: a time-dependent id differs between xdist workers.
@pytest.mark.parametrize(("claim", "literal"), BAD_TIMES,
                         ids=[f"{c}={'string-future' if v == FUTURE_STRING else v}" for c, v in BAD_TIMES])
async def test_time_claim_that_is_not_a_number_is_401(aiohttp_client, settings, db, jwks_url, mode, claim, literal):
    client = await aiohttp_client(create_app(settings.model_copy(update={
        "auth_mode": mode, "jwks_urls": [jwks_url], "jwt_algorithms": ["RS256"]})), headers={})
    token = SIGNERS[mode](_payload(claim, literal))
    good = SIGNERS[mode](_payload(claim, FUTURE if claim == "exp" else "0"))
    # The same token with a numeric time is accepted: the refusal is about the claim alone.
    assert (await client.get("/fhir/Organization/x", headers=tokens.bearer(good))).status == 404
    before = await store_counts(db)
    for method, path in (("GET", "/fhir/Organization/x"), ("POST", "/fhir/Organization")):
        response = await client.request(method, path, data=ORG, headers={**tokens.bearer(token),
                                                                          "Content-Type": FHIR_JSON})
        await assert_outcome(response, 401, "login")
    assert await store_counts(db) == before
