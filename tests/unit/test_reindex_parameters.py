"""`$reindex` and `$reindex-dryrun` request parameters: accepted forms, defaults and every refusal."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from service.fhir.errors import FhirError
from service.fhir.parameters import (
    MAX_BATCH_SIZE,
    ReindexRequest,
    SearchUrl,
    parse_dryrun_codes,
    parse_reindex_request,
)


def params(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Parameters", "parameter": list(entries)}


def refusal(body: Any) -> str:
    with pytest.raises(FhirError) as caught:
        parse_reindex_request(body)
    assert caught.value.status == 400
    assert caught.value.code == "invalid"
    assert caught.value.severity == "error"
    return caught.value.diagnostics


def test_the_seed_body() -> None:
    request = parse_reindex_request(params({"name": "url", "valueString": "Organization?"}))
    assert request.urls == ("Organization?",)
    assert request.searches == (SearchUrl("Organization", ""),)


@pytest.mark.parametrize("body", [params(), {"resourceType": "Parameters"}])
def test_defaults(body: dict[str, Any]) -> None:
    assert parse_reindex_request(body) == ReindexRequest(
        urls=(), batch_size=500, reindex_search_parameters="ALL", optimize_storage="NONE", optimistic_lock=True,
        correct_current_version="NONE", partition_ids=(), force=False,
    )
    assert parse_reindex_request(body).searches == ()


def test_every_parameter_at_once() -> None:
    request = parse_reindex_request(params(
        {"name": "url", "valueUri": "Organization?active=true&name=a%20b"},
        {"name": "url", "valueString": "Organization?name=Region Hovedstaden"},
        {"name": "url", "valueString": "Patient?"},
        {"name": "batchSize", "valueInteger": 10_000},
        {"name": "reindexSearchParameters", "valueCode": "none"},
        {"name": "optimizeStorage", "valueString": "All_Versions"},
        {"name": "optimisticLock", "valueBoolean": False},
        {"name": "correctCurrentVersion", "valueCode": "all"},
        {"name": "partitionId", "valueString": "p1"},
        {"name": "partitionId", "valueInteger": 2},
        {"name": "force", "valueBoolean": True},
    ))
    assert request.searches == (SearchUrl("Organization", "active=true&name=a%20b"),
                                SearchUrl("Organization", "name=Region Hovedstaden"), SearchUrl("Patient", ""))
    assert request.batch_size == MAX_BATCH_SIZE
    assert request.reindex_search_parameters == "NONE"
    assert request.optimize_storage == "ALL_VERSIONS"
    assert request.optimistic_lock is False
    assert request.correct_current_version == "ALL"
    assert request.partition_ids == ("p1", "2")
    assert request.force is True


@pytest.mark.parametrize(("entry", "expected"), [
    ({"valueInteger": 1}, 1),
    ({"valuePositiveInt": 250}, 250),
    ({"valueDecimal": 20.0}, 20),
    ({"valueDecimal": 7}, 7),
    ({"valueString": " 42 "}, 42),
    ({"valueString": "1e2"}, 100),
])
def test_batch_size_forms(entry: dict[str, Any], expected: int) -> None:
    assert parse_reindex_request(params({"name": "batchSize", **entry})).batch_size == expected


@pytest.mark.parametrize(("value", "expected"), [
    ({"valueBoolean": True}, True), ({"valueString": "false"}, False), ({"valueString": " TRUE "}, True),
])
def test_optimistic_lock_forms(value: dict[str, Any], expected: bool) -> None:
    assert parse_reindex_request(params({"name": "optimisticLock", **value})).optimistic_lock is expected


def test_verify_is_a_boolean() -> None:
    assert parse_reindex_request(params({"name": "verify", "valueString": "true"})).verify is True
    assert parse_reindex_request(params()).verify is False
    with pytest.raises(FhirError, match="'verify' must be a boolean"):
        parse_reindex_request(params({"name": "verify", "valueString": "1"}))


def test_force_is_a_boolean() -> None:
    assert parse_reindex_request(params({"name": "force", "valueString": "TRUE"})).force is True
    assert parse_reindex_request(params()).force is False
    with pytest.raises(FhirError, match="'force' must be a boolean"):
        parse_reindex_request(params({"name": "force", "valueString": "yes"}))


@pytest.mark.parametrize(("name", "field", "value", "expected"), [
    ("reindexSearchParameters", "reindex_search_parameters", "all", "ALL"),
    ("optimizeStorage", "optimize_storage", "current_version", "CURRENT_VERSION"),
    ("optimizeStorage", "optimize_storage", " none ", "NONE"),
    ("correctCurrentVersion", "correct_current_version", "None", "NONE"),
])
def test_codes_are_case_insensitive(name: str, field: str, value: str, expected: str) -> None:
    request = parse_reindex_request(params(
        {"name": name, "valueCode": value}, {"name": "optimisticLock", "valueBoolean": False},
    ))
    assert getattr(request, field) == expected


def test_a_repeated_url_is_kept_once() -> None:
    request = parse_reindex_request(params(
        {"name": "url", "valueString": "Patient?"}, {"name": "url", "valueString": "Patient?"},
    ))
    assert request.urls == ("Patient?",)


def test_the_request_is_frozen() -> None:
    with pytest.raises(ValidationError):
        parse_reindex_request(params()).batch_size = 3  # type: ignore[misc]


@pytest.mark.parametrize(("body", "message"), [
    (None, "must be a FHIR Parameters resource"),
    ([], "must be a FHIR Parameters resource"),
    ({"resourceType": "Patient"}, "must be a FHIR Parameters resource"),
    ({"resourceType": "Parameters", "parameter": {"name": "url"}}, "Parameters.parameter must be a list"),
    (params("url"), "Parameters.parameter[0] has no name"),
    (params({"valueString": "Patient?"}), "Parameters.parameter[0] has no name"),
    (params({"name": "", "valueString": "Patient?"}), "Parameters.parameter[0] has no name"),
    (params({"name": "everything", "valueBoolean": True}), "Unknown parameter 'everything'"),
    (params({"name": "batchsize", "valueInteger": 5}), "Unknown parameter 'batchsize'"),
    (params({"name": "url"}), "Parameter 'url' must have exactly one value[x], found 0"),
    (params({"name": "url", "valueString": "Patient?", "valueUri": "Patient?"}), "found 2"),
    (params({"name": "url", "valueCode": "Patient?"}), "Parameter 'url' does not accept valueCode"),
    (params({"name": "optimisticLock", "valueInteger": 1}), "does not accept valueInteger"),
    (params({"name": "batchSize", "valueInteger": 5}, {"name": "batchSize", "valueInteger": 6}),
     "Parameter 'batchSize' of $reindex may appear at most once"),
    (params({"name": "optimizeStorage", "valueCode": "NONE"}, {"name": "optimizeStorage", "valueCode": "NONE"}),
     "may appear at most once"),
    (params({"name": "batchSize", "valueInteger": 0}),
     "Invalid value for parameter 'batchSize' of $reindex: Input should be greater than or equal to 1"),
    (params({"name": "batchSize", "valueInteger": -5}), "greater than or equal to 1"),
    (params({"name": "batchSize", "valueInteger": MAX_BATCH_SIZE + 1}), "less than or equal to 10000"),
    (params({"name": "batchSize", "valueInteger": True}), "Parameter 'batchSize' must be an integer"),
    (params({"name": "batchSize", "valueDecimal": 1.5}), "must be an integer, got 1.5"),
    (params({"name": "batchSize", "valueString": "many"}), "must be an integer, got 'many'"),
    (params({"name": "batchSize", "valueString": "Infinity"}), "must be an integer"),
    (params({"name": "batchSize", "valueInteger": "5"}), "must be an integer"),
    (params({"name": "optimisticLock", "valueString": "yes"}), "Parameter 'optimisticLock' must be a boolean"),
    (params({"name": "optimisticLock", "valueBoolean": "true"}), "must be a boolean"),
    (params({"name": "reindexSearchParameters", "valueCode": "SOME"}),
     "Invalid value for parameter 'reindexSearchParameters' of $reindex: Input should be 'ALL' or 'NONE'"),
    (params({"name": "optimizeStorage", "valueCode": "CURRENT"}), "parameter 'optimizeStorage'"),
    (params({"name": "correctCurrentVersion", "valueCode": "SOME"}), "parameter 'correctCurrentVersion'"),
    (params({"name": "reindexSearchParameters", "valueCode": ""}), "must have a non-empty valueCode"),
    (params({"name": "reindexSearchParameters", "valueCode": 1}), "must have a non-empty valueCode"),
    (params({"name": "correctCurrentVersion", "valueCode": "ALL"}),
     "Invalid $reindex parameters: correctCurrentVersion=ALL requires optimisticLock=false"),
    (params({"name": "reindexSearchParameters", "valueCode": "NONE"}),
     "Invalid $reindex parameters: reindexSearchParameters=NONE with optimizeStorage=NONE leaves nothing to do"),
    (params({"name": "correctCurrentVersion", "valueCode": "ALL"}, {"name": "optimisticLock", "valueBoolean": True}),
     "requires optimisticLock=false"),
    (params({"name": "url", "valueString": "Patient"}), "'Patient' is not a relative search URL"),
    (params({"name": "url", "valueString": "/Patient?"}), "is not a relative search URL"),
    (params({"name": "url", "valueString": "http://x/fhir/Patient?"}), "is not a relative search URL"),
    (params({"name": "url", "valueString": "?name=a"}), "is not a relative search URL"),
    (params({"name": "url", "valueString": "Patient?name=a#b"}), "is not a relative search URL"),
    (params({"name": "url", "valueString": "Patient?name=a\nb"}), "is not a relative search URL"),
    (params({"name": "url", "valueString": "Patient/1"}), "is not a relative search URL"),
    (params({"name": "url", "valueString": "   "}), "must have a non-empty valueString"),
    (params({"name": "url", "valueString": "Foo?"}),
     "Invalid value for parameter 'url' of $reindex: 'Foo?' names an unknown resource type: Foo"),
    (params({"name": "url", "valueString": "patient?"}), "unknown resource type: patient"),
    (params({"name": "partitionId", "valueString": " "}), "Parameter 'partitionId' must have a non-empty valueString"),
    (params({"name": "partitionId", "valueInteger": 1.5}), "must have a non-empty valueInteger"),
])
def test_refusals(body: Any, message: str) -> None:
    assert message in refusal(body)


def test_a_blank_partition_id_is_refused_by_the_model_too() -> None:
    with pytest.raises(ValidationError, match="must not be blank"):
        ReindexRequest(partition_ids=("",))


@pytest.mark.parametrize(("query", "body", "expected"), [
    ([], None, ()),
    (["name"], None, ("name",)),
    (["name", "identifier"], None, ("name", "identifier")),
    (["name,identifier", "name"], None, ("name", "identifier")),
    ([], params({"name": "code", "valueCode": "name"}, {"name": "code", "valueString": "_id"}), ("name", "_id")),
    (["name"], params({"name": "code", "valueCode": "partof"}), ("name", "partof")),
    ([], params(), ()),
    (["address-city"], None, ("address-city",)),
])
def test_dryrun_codes(query: list[str], body: dict[str, Any] | None, expected: tuple[str, ...]) -> None:
    assert parse_dryrun_codes(query, body) == expected


@pytest.mark.parametrize(("query", "body", "message"), [
    ([""], None, "'' is not a search parameter code"),
    (["name,"], None, "'' is not a search parameter code"),
    (["na me"], None, "'na me' is not a search parameter code"),
    (["<b>"], None, "is not a search parameter code"),
    (["name:exact"], None, "'name:exact' is not a search parameter code"),
    (["-name"], None, "is not a search parameter code"),
    ([], {"resourceType": "Patient"}, "must be a FHIR Parameters resource"),
    ([], params({"name": "url", "valueString": "Patient?"}), "Unknown parameter 'url' for this operation; known: code"),
    ([], params({"name": "code", "valueBoolean": True}), "Parameter 'code' does not accept valueBoolean"),
    ([], params({"name": "code", "valueCode": " "}), "Parameter 'code' must have a non-empty valueCode"),
])
def test_dryrun_code_refusals(query: list[str], body: Any, message: str) -> None:
    with pytest.raises(FhirError) as caught:
        parse_dryrun_codes(query, body)
    assert caught.value.status == 400
    assert caught.value.code == "invalid"
    assert message in caught.value.diagnostics
