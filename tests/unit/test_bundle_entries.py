"""Bundle entries as requests, and references found and rewritten (pure)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from service.fhir import exact_json
from service.fhir.bundle_entries import Entry, bundle_entries, located, parse_entry
from service.fhir.errors import FhirError
from service.fhir.references import conditional_reference, references, rewrite_references
from service.fhir.resource import Submitted, parse_resource

ORG = {"resourceType": "Organization"}


def parsed(request: dict[str, Any], resource: dict[str, Any] | None = ORG, **extra: Any) -> Entry:
    values = {"request": request, **({"resource": resource} if resource is not None else {}), **extra}
    return parse_entry(3, values, values)


@pytest.mark.parametrize(("request_", "expected"), [
    ({"method": "POST", "url": "Organization"}, ("POST", "Organization", None, None, None)),
    ({"method": "POST"}, ("POST", "Organization", None, None, None)),  # the resource's type, as HAPI
    ({"method": "PUT", "url": "/Organization/a1"}, ("PUT", "Organization", "a1", None, None)),
    ({"method": "PUT", "url": "Organization?identifier=s%7Cv"}, ("PUT", "Organization", None, None,
                                                                (("identifier", "s|v"),))),
    ({"method": "DELETE", "url": "Organization?name=x&active=true"},
     ("DELETE", "Organization", None, None, (("name", "x"), ("active", "true")))),
    ({"method": "GET", "url": "Organization/a1/_history/2"}, ("GET", "Organization", "a1", 2, None)),
    ({"method": "GET", "url": "Organization"}, ("GET", "Organization", None, None, None)),
    ({"method": "GET", "url": "Organization?"}, ("GET", "Organization", None, None, ())),
])
def test_entry_urls(request_: dict[str, Any], expected: tuple[Any, ...]) -> None:
    entry = parsed(request_)
    assert (entry.method, entry.res_type, entry.fhir_id, entry.version, entry.query) == expected


@pytest.mark.parametrize(("values", "message"), [
    ({"request": {"method": "GET", "url": "Organization"}, "fullUrl": "urn:isbn:1"}, "Invalid placeholder"),
    ({"resource": ORG}, "has no request"),
    ({"request": {"method": "HEAD", "url": "Organization"}}, "Invalid request.method 'HEAD'"),
    ({"request": {"method": "PUT", "url": "Organization"}, "resource": ORG}, "Unable to perform PUT Organization"),
    ({"request": {"method": "POST", "url": "Organization/1"}, "resource": ORG}, "Unable to perform POST"),
    ({"request": {"method": "POST", "url": "Organization?a=b"}, "resource": ORG}, "go in request.ifNoneExist"),
    ({"request": {"method": "PUT", "url": "Organization/1"}}, "A PUT entry needs a resource"),
    ({"request": {"method": "GET", "url": "Foo/1"}}, "does not start with a FHIR R4 resource type"),
    ({"request": {"method": "GET", "url": "https://other.test/fhir/Organization/1"}}, "must be relative"),
    ({"request": {"method": "GET", "url": "Organization/1/_history/x"}}, "Invalid version id"),
    ({"request": {"method": "GET", "url": "Organization/$everything/x"}}, "Unable to perform GET"),
    ({"request": {"method": "GET", "url": "Organization/a b"}}, "Invalid resource id"),
    ({"request": {"method": "GET", "url": 7}}, "'url' must be a string"),
])
def test_malformed_entries(values: dict[str, Any], message: str) -> None:
    with pytest.raises(FhirError) as raised:
        parse_entry(0, values, values)
    assert raised.value.status == 400 and message in raised.value.diagnostics


def test_conditions_and_labels() -> None:
    entry = parsed({"method": "PUT", "url": "Organization/a", "ifMatch": 'W/"2"', "ifNoneExist": " "},
                   fullUrl="urn:uuid:x")
    assert entry.condition("ifMatch") == 'W/"2"' and entry.condition("ifNoneExist") is None
    error = located(entry.index, entry.full_url, FhirError(412, "stale", code="conflict"))
    assert (error.status, error.code, error.diagnostics) == (412, "conflict", "Bundle.entry[3] (urn:uuid:x): stale")


def test_bundle_entries_checks_the_bundle() -> None:
    bundle = Submitted.of({"resourceType": "Bundle", "type": "transaction", "entry": [{"a": 1}, {"b": 2}]})
    assert bundle_entries(bundle, 2) == ("transaction", [({"a": 1}, {"a": 1}), ({"b": 2}, {"b": 2})])
    with pytest.raises(FhirError) as raised:
        bundle_entries(bundle, 1)
    assert raised.value.status == 413
    assert bundle_entries(Submitted.of({"resourceType": "Bundle"}), 1) == ("transaction", [])  # as HAPI
    for other in ({"resourceType": "Patient"}, {"resourceType": "Bundle", "type": "searchset"},
                  {"resourceType": "Bundle", "type": "batch", "entry": {}}):
        with pytest.raises(FhirError):
            bundle_entries(Submitted.of(other), 10)


def test_references_are_found_at_any_depth_and_rewritten_in_both_trees() -> None:
    raw = (b'{"resourceType":"Observation","valueQuantity":{"value":1.50},"subject":{"reference":"urn:uuid:p"},'
           b'"contained":[{"resourceType":"Specimen","id":"s","subject":{"reference":"urn:uuid:p"}}],'
           b'"extension":[{"url":"e","valueReference":{"reference":"Organization?identifier=s|1"}}],'
           b'"identifier":[{"system":"urn:ietf:rfc:3986","value":"urn:uuid:p"}],"specimen":{"reference":"#s"}}')
    resource = parse_resource(raw)
    assert resource.exact is not resource.values  # 1.50 is kept as text
    assert list(references(resource.values)) == ["urn:uuid:p", "urn:uuid:p", "Organization?identifier=s|1", "#s"]
    rewrite_references(resource, {"urn:uuid:p": "Patient/1", "Organization?identifier=s|1": "Organization/2"}.get)
    for tree in (resource.values, resource.exact):
        assert list(references(tree)) == ["Patient/1", "Patient/1", "Organization/2", "#s"]
        assert tree["identifier"][0]["value"] == "urn:uuid:p"  # an identifier is not a reference
    assert b'"value":1.50' in orjson.dumps(resource.exact)
    assert exact_json.parse(orjson.dumps(resource.exact))[0]["subject"] == {"reference": "Patient/1"}


def test_conditional_references() -> None:
    assert conditional_reference("Organization?identifier=s%7C1&active=true") == (
        "Organization", [("identifier", "s|1"), ("active", "true")])
    assert conditional_reference("Organization/1") is None
    assert conditional_reference("http://other.test/fhir/Organization?x=1") is None
