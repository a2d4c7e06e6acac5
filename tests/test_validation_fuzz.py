"""Fuzzed resource bodies, as creates, updates and `$validate`: no answer is a 5xx, a refusal is an
OperationOutcome, and `$validate` agrees with the create on whether the body is valid.

Bodies follow the R4 structures (service/fhir/structures.py) with values that mostly fit the element's type
(dates at calendar edges, numbers at range edges, codes, URIs) and now and then do not: any JSON, control
characters, long strings, unknown keys, deep nesting. `FHIR_FUZZ_EXAMPLES` runs more than the suite's few
hundred (e.g. 5000, before a release)."""

from __future__ import annotations

import json
import os

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.fhir.structures import RESOURCE, Field, shape

TYPES = ("Patient", "Observation", "Organization", "Questionnaire", "Bundle", "Parameters", "Account")
FHIR_JSON = {"Content-Type": "application/fhir+json"}
MAX_DEPTH = 3  # levels of complex elements generated below the resource

texts = st.text(max_size=12) | st.sampled_from(["", " ", "a\u0000b", "\u001b", "tab\tok", "x" * 3000, "ünï cödé"])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False, allow_infinity=False)
    | texts, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3), max_leaves=6)
dates = st.from_regex(r"[0-9]{4}(-[0-9]{2}(-[0-9]{2})?)?", fullmatch=True)
times = st.from_regex(r"[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,4})?", fullmatch=True)
zones = st.sampled_from(["Z", "+14:00", "-12:30", "+15:00", ""])
PRIMITIVES = {
    "boolean": st.booleans(),
    "integer": st.integers(-(2**31) - 1, 2**31),
    "positiveInt": st.integers(-1, 2**31),
    "unsignedInt": st.integers(-1, 2**31),
    "decimal": st.integers(-(2**64), 2**64) | st.floats(allow_nan=False, allow_infinity=False),
    "date": dates,
    "dateTime": dates | st.tuples(dates, times, zones).map(lambda p: f"{p[0]}T{p[1]}{p[2]}"),
    "instant": st.tuples(dates, times, zones).map(lambda p: f"{p[0]}T{p[1]}{p[2]}"),
    "time": times,
    "id": st.from_regex(r"[A-Za-z0-9.\-]{1,66}", fullmatch=True),
    "code": st.sampled_from(["final", "male", "en-US", "active", "collection", "a  b", " x"]),
    "uri": st.sampled_from(["http://example.org/x", "urn:uuid:1", "a b", "Patient/1"]),
    "base64Binary": st.sampled_from(["aGVsbG8=", "abc", "aGVs bG8="]),
}


def rare(draw: st.DrawFn) -> bool:
    """True about once in 20 draws (a middle value: Hypothesis favours the bounds of a range)."""
    return draw(st.integers(0, 19)) == 7


def primitive(field: Field) -> st.SearchStrategy[object]:
    return PRIMITIVES.get(field.type, texts)


@st.composite
def element(draw: st.DrawFn, type_name: str, depth: int) -> dict[str, object]:
    """An object of the type (or backbone): mostly its required elements and a few others (only primitives
    at the deepest level), now and then an unknown one."""
    owner = shape(type_name)
    keys = sorted(key for key, field in owner.fields.items() if field.check is not None or depth < MAX_DEPTH)
    chosen = draw(st.lists(st.sampled_from(keys), max_size=4, unique=True)) if keys else []
    chosen += [required[0] for _name, required in owner.required if not rare(draw)]
    found: dict[str, object] = {}
    for key in dict.fromkeys(chosen):
        field = owner.fields[key]
        count = draw(st.integers(1, 2)) if field.many and not rare(draw) else 0
        values = [draw(value(field, depth)) for _ in range(max(count, 1))]
        found[key] = values if count else values[0]
    if rare(draw):
        found[draw(texts)] = draw(json_values)
    return found or {"id": "x"}


@st.composite
def value(draw: st.DrawFn, field: Field, depth: int) -> object:
    if rare(draw):
        return draw(json_values)
    if field.check is not None:
        return draw(primitive(field))
    if field.type == RESOURCE:
        res_type = draw(st.sampled_from(["Patient", "Organization", "Nonsense"]))
        inner = draw(element(res_type if res_type != "Nonsense" else "Patient", depth + 1))
        return {**inner, "resourceType": res_type}
    return draw(element(field.type, depth + 1))


@st.composite
def body(draw: st.DrawFn, res_type: str) -> bytes:
    resource = {**draw(element(res_type, 0)), "resourceType": res_type, "id": "fuzz"}
    text = json.dumps(resource).encode()  # json: integers beyond 64 bits too
    if rare(draw):  # deep nesting somewhere
        levels = draw(st.integers(90, 300))
        text = text[:-1] + b',"deep":' + b"[" * levels + b"]" * levels + b"}"
    return text


@settings(max_examples=int(os.environ.get("FHIR_FUZZ_EXAMPLES", "300")), deadline=None, database=None,
          derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                                   HealthCheck.data_too_large])
@given(data=st.data())
async def test_fuzzed_resource_body_is_never_a_5xx(client, data) -> None:
    res_type = data.draw(st.sampled_from(TYPES))
    sent = data.draw(body(res_type))
    write = data.draw(st.sampled_from(["POST", "PUT"]))
    path = f"/fhir/{res_type}" if write == "POST" else f"/fhir/{res_type}/fuzz"
    written = await client.request(write, path, data=sent, headers=FHIR_JSON)
    answer = await written.read()
    assert written.status < 500, (sent[:300], answer[:500])
    if written.status >= 400:
        assert orjson.loads(answer)["resourceType"] == "OperationOutcome"
    checked = await client.post(f"/fhir/{res_type}/$validate", data=sent, headers=FHIR_JSON)
    outcome = orjson.loads(await checked.read())
    assert checked.status in (200, 400), outcome
    valid = checked.status == 200 and outcome["issue"][0]["severity"] == "information"
    assert valid == (written.status in (200, 201)), (sent[:300], answer[:500], outcome)
