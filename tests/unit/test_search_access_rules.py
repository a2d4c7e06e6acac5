"""The search access rules on parsed queries, without a database: what is refused, and what is narrowed."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from service.fhir.errors import FhirError
from service.http.search_access import authorize_search, explicit_reads, readable_types
from service.search.query import SearchContext, SearchQuery, parse_search
from service.search.registry import Registry

CONTEXT = SearchContext(Registry.builtin(), "http://fhir.test/fhir", datetime.now(timezone.utc), False, 20, 100)


def parse(res_type: str, *items: tuple[str, str]) -> SearchQuery:
    return parse_search(res_type, items, CONTEXT)


def test_read_privileges_and_the_searched_type_are_readable() -> None:
    privileges = frozenset({"Patient.read", "Patient.search", "Group.write", "$reindex"})
    assert readable_types(privileges, ("Encounter",)) == {"Patient", "Encounter"}


def test_chains_and_named_includes_are_explicit_reads() -> None:
    query = parse("Encounter", ("subject:Patient.family", "Doe"), ("_include", "Encounter:service-provider"),
                  ("_include", "Encounter:subject"), ("_revinclude", "Observation:encounter"))
    assert explicit_reads(query) == {"Patient": ["subject:Patient.family"],
                                     "Organization": ["_include=Encounter:service-provider"],
                                     "Observation": ["_revinclude=Observation:encounter"]}


def test_a_wildcard_include_is_narrowed_to_readable_targets() -> None:
    access = authorize_search(parse("Encounter", ("_include", "Encounter:subject")), frozenset({"Patient.read"}))
    assert access.query.includes[0].types == ("Patient",)
    assert access.left_out == ("_include=Encounter:subject: resources of the types this token may not read are "
                               "left out (whether or not any exist); it lacks Group.read",)


def test_a_wildcard_revinclude_follows_only_parameters_of_readable_types() -> None:
    query = parse("Patient", ("_revinclude", "*"))
    assert {"Observation", "Encounter", "Condition"} <= set(query.includes[0].types)
    narrowed = authorize_search(query, frozenset({"Observation.read"})).query.includes[0]
    assert narrowed.types == ("Observation", "Patient")
    assert {source for source, _ in narrowed.parameters} == {"Observation", "Patient"}
    assert ("Observation", "subject") in narrowed.parameters


def test_a_token_that_reads_every_target_gets_no_note() -> None:
    access = authorize_search(parse("Encounter", ("_include", "Encounter:subject")),
                              frozenset({"Patient.read", "Group.read"}))
    assert access.left_out == () and access.query.includes[0].types == ("Group", "Patient")


def test_an_explicit_include_is_refused_not_narrowed() -> None:
    with pytest.raises(FhirError) as refused:
        authorize_search(parse("Encounter", ("_include", "Encounter:subject:Patient")), frozenset({"Group.read"}))
    assert refused.value.status == 403 and refused.value.code == "forbidden"
    assert refused.value.diagnostics == ("The privilege Patient.read is required for this search "
                                         "(_include=Encounter:subject:Patient)")
