"""A search returns and filters on only what its token may read: includes, revincludes, wildcards, chains.

Every case runs the real app on PostgreSQL with a token holding `Encounter.search` and the listed read
privileges, and checks the exact set of resources returned (or the 403 and its message) and which types the
searchset says were left out.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from service.app import create_app
from service.fhir.resource_types import RESOURCE_TYPES
from service.search.registry import Registry
from tests.tokens import bearer, claims, hs256

PATIENT = {"resourceType": "Patient", "id": "p1", "name": [{"family": "Doe"}]}
GROUP = {"resourceType": "Group", "id": "g1", "type": "person", "actual": True}
PRACTITIONER = {"resourceType": "Practitioner", "id": "pr1", "name": [{"family": "Smith"}]}
ORGANIZATION = {"resourceType": "Organization", "id": "o1", "name": "Ward"}
ENCOUNTER_CLASS = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"}
E1 = {"resourceType": "Encounter", "id": "e1", "status": "finished", "class": ENCOUNTER_CLASS,
      "subject": {"reference": "Patient/p1"}, "participant": [{"individual": {"reference": "Practitioner/pr1"}}],
      "serviceProvider": {"reference": "Organization/o1"}}
E2 = {"resourceType": "Encounter", "id": "e2", "status": "finished", "class": ENCOUNTER_CLASS,
      "subject": {"reference": "Group/g1"}, "partOf": {"reference": "Encounter/e1"}}
OBSERVATION = {"resourceType": "Observation", "id": "obs1", "status": "final", "code": {"text": "pulse"},
               "subject": {"reference": "Patient/p1"}, "encounter": {"reference": "Encounter/e1"}}
DATA = [PATIENT, GROUP, PRACTITIONER, ORGANIZATION, E1, E2, OBSERVATION]

ENCOUNTERS = {"Encounter/e1", "Encounter/e2"}
ALL_READ = [f"{res_type}.read" for res_type in sorted(RESOURCE_TYPES)]


def _reference_parameters(registry: Registry, res_type: str) -> list:
    return [p.definition for p in registry.parameters(res_type)
            if p.definition.type == "reference" and p.definition.indexed]


def _types_of_the_r4_definitions() -> tuple[frozenset[str], frozenset[str]]:
    """What Encounter's reference parameters may point at, and the types whose parameters may point at Encounter."""
    registry = Registry.builtin()
    targets = {t for d in _reference_parameters(registry, "Encounter") for t in d.target}
    referring = {source for source in RESOURCE_TYPES for d in _reference_parameters(registry, source)
                 if "Encounter" in d.target}
    return frozenset(targets), frozenset(referring)


ENCOUNTER_TARGETS, REFERRING_TO_ENCOUNTER = _types_of_the_r4_definitions()
CHAIN_PATIENT = "subject:Patient.family"
TYPED_SUBJECT = "_include=Encounter:subject:Patient"

CASES: list[tuple[str, str, list[tuple[str, str]], list[str], set[str] | str, set[str] | None]] = [
    # (name, method, parameters, read privileges, the resources returned or the 403 message, types left out)
    ("include typed without read", "GET", [("_include", "Encounter:subject:Patient")], [],
     f"The privilege Patient.read is required for this search ({TYPED_SUBJECT})", None),
    ("include typed with read", "GET", [("_include", "Encounter:subject:Patient")], ["Patient.read"],
     ENCOUNTERS | {"Patient/p1"}, None),
    ("include of one target type without read", "GET", [("_include", "Encounter:service-provider")], [],
     "The privilege Organization.read is required for this search (_include=Encounter:service-provider)", None),
    ("include of one target type with read", "GET", [("_include", "Encounter:service-provider")],
     ["Organization.read"], ENCOUNTERS | {"Organization/o1"}, None),
    ("include untyped without read", "GET", [("_include", "Encounter:subject")], [], ENCOUNTERS,
     {"Group", "Patient"}),
    ("include untyped with one of its types", "GET", [("_include", "Encounter:subject")], ["Patient.read"],
     ENCOUNTERS | {"Patient/p1"}, {"Group"}),
    ("include untyped with all its types", "GET", [("_include", "Encounter:subject")],
     ["Patient.read", "Group.read"], ENCOUNTERS | {"Patient/p1", "Group/g1"}, None),
    ("include of the searched type needs no read", "GET", [("_id", "e2"), ("_include", "Encounter:part-of")], [],
     ENCOUNTERS, None),
    ("wildcard include without read", "GET", [("_include", "*")], [], ENCOUNTERS,
     ENCOUNTER_TARGETS - {"Encounter"}),
    ("wildcard include with one read", "GET", [("_include", "*")], ["Patient.read"], ENCOUNTERS | {"Patient/p1"},
     ENCOUNTER_TARGETS - {"Encounter", "Patient"}),
    ("wildcard include with every read", "GET", [("_include", "*")], ALL_READ,
     ENCOUNTERS | {"Patient/p1", "Group/g1", "Practitioner/pr1", "Organization/o1"}, None),
    ("revinclude without read", "GET", [("_revinclude", "Observation:encounter")], [],
     "The privilege Observation.read is required for this search (_revinclude=Observation:encounter)", None),
    ("revinclude with read", "GET", [("_revinclude", "Observation:encounter")], ["Observation.read"],
     ENCOUNTERS | {"Observation/obs1"}, None),
    ("wildcard revinclude without read", "GET", [("_revinclude", "*")], [], ENCOUNTERS,
     REFERRING_TO_ENCOUNTER - {"Encounter"}),
    ("wildcard revinclude with read", "GET", [("_revinclude", "*")], ["Observation.read"],
     ENCOUNTERS | {"Observation/obs1"}, REFERRING_TO_ENCOUNTER - {"Encounter", "Observation"}),
    ("chain without read", "GET", [(CHAIN_PATIENT, "Doe")], [],
     f"The privilege Patient.read is required for this search ({CHAIN_PATIENT})", None),
    ("chain counted without read", "GET", [(CHAIN_PATIENT, "Doe"), ("_summary", "count")], [],
     f"The privilege Patient.read is required for this search ({CHAIN_PATIENT})", None),
    ("chain with read", "GET", [(CHAIN_PATIENT, "Doe")], ["Patient.read"], {"Encounter/e1"}, None),
    ("chain and include without either read", "GET",
     [("participant:Practitioner.family", "Smith"), ("_include", "Encounter:subject:Patient")], [],
     "The privileges Patient.read, Practitioner.read are required for this search "
     f"({TYPED_SUBJECT}, participant:Practitioner.family)", None),
    ("POST include typed without read", "POST", [("_include", "Encounter:subject:Patient")], [],
     f"The privilege Patient.read is required for this search ({TYPED_SUBJECT})", None),
    ("POST include typed with read", "POST", [("_include", "Encounter:subject:Patient")], ["Patient.read"],
     ENCOUNTERS | {"Patient/p1"}, None),
    ("POST wildcard include with one read", "POST", [("_include", "*")], ["Patient.read"],
     ENCOUNTERS | {"Patient/p1"}, ENCOUNTER_TARGETS - {"Encounter", "Patient"}),
    ("POST chain without read", "POST", [(CHAIN_PATIENT, "Doe")], [],
     f"The privilege Patient.read is required for this search ({CHAIN_PATIENT})", None),
    ("POST chain with read", "POST", [(CHAIN_PATIENT, "Doe")], ["Patient.read"], {"Encounter/e1"}, None),
]


async def search(client, method: str, parameters: list[tuple[str, str]], roles: list[str],
                 path: str = "/fhir/Encounter") -> tuple[int, dict[str, Any]]:
    token = bearer(hs256(claims(roles, user_type="PRACTITIONER")))
    if method == "GET":
        response = await client.get(path, params=parameters, headers=token)
    else:
        response = await client.post(f"{path}/_search", data=parameters, headers=token)
    return response.status, await response.json(content_type=None)


def returned(bundle: dict[str, Any]) -> set[str]:
    return {f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in bundle.get("entry", [])
            if e["search"]["mode"] != "outcome"}


def notes(bundle: dict[str, Any]) -> list[dict[str, str]]:
    return [issue for e in bundle.get("entry", []) if e["search"]["mode"] == "outcome"
            for issue in e["resource"]["issue"]]


def left_out(bundle: dict[str, Any]) -> set[str] | None:
    """The types the searchset says were left out, or None without such a note."""
    suppressed = [issue for issue in notes(bundle) if issue["code"] == "suppressed"]
    if not suppressed:
        return None
    assert len(suppressed) == 1 and suppressed[0]["severity"] == "information"
    lacking = re.search(r"; it lacks (.+)$", suppressed[0]["diagnostics"])
    assert lacking is not None, suppressed
    return {privilege.removesuffix(".read") for privilege in lacking.group(1).split(", ")}


@pytest.mark.parametrize(("name", "method", "parameters", "reads", "expected", "omitted"), CASES,
                         ids=[case[0] for case in CASES])
async def test_search_returns_only_readable_types(client, name, method, parameters, reads, expected,
                                                  omitted) -> None:
    for resource in DATA:
        response = await client.put(f"/fhir/{resource['resourceType']}/{resource['id']}", json=resource)
        assert response.status == 201, await response.text()
    status, body = await search(client, method, parameters, ["Encounter.search", *reads])
    if isinstance(expected, str):
        assert status == 403, body
        assert body["resourceType"] == "OperationOutcome" and body["issue"][0]["code"] == "forbidden"
        assert body["issue"][0]["diagnostics"] == expected
        return
    assert status == 200, body
    assert returned(body) == expected
    assert left_out(body) == omitted


async def test_wildcard_includes_are_narrowed_in_the_query(aiohttp_client, settings) -> None:
    """The include limit counts readable resources only: unreadable ones are never fetched, so they cannot
    crowd the readable ones out of the page."""
    client = await aiohttp_client(create_app(settings.model_copy(update={"default_page_size": 2,
                                                                          "max_page_size": 2})))
    assert (await client.put("/fhir/Patient/p1", json=PATIENT)).status == 201
    for index in range(3):  # unreadable referrers, stored (so with lower res_ids) before the readable one
        encounter = {**E1, "id": f"e{index}", "subject": {"reference": "Patient/p1"}}
        assert (await client.put(f"/fhir/Encounter/e{index}", json=encounter)).status == 201
    assert (await client.put("/fhir/Observation/obs1", json=OBSERVATION)).status == 201
    status, body = await search(client, "GET", [("_id", "p1"), ("_revinclude", "*")],
                                ["Patient.search", "Observation.read"], path="/fhir/Patient")
    assert status == 200, body
    assert returned(body) == {"Patient/p1", "Observation/obs1"}
    assert [issue["code"] for issue in notes(body)] == ["suppressed"]  # and no "too-costly" truncation
    assert "Encounter" in (left_out(body) or set())
