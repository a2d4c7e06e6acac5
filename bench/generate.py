"""Generated, realistic FHIR R4 resources for the benchmarks (no network, deterministic per seed).

Organizations follow the Plan-Net examples in tests/data/plannet (NPI identifier, name, alias,
addresses, telecom, organization-type, partOf, an extension); Observations follow Synthea's
(tests/data/synthea-r4-2019): LOINC code, category, subject/encounter, dates, UCUM valueQuantity.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

ORG_TYPES = (("prov", "Healthcare Provider"), ("dept", "Hospital Department"), ("team", "Organizational team"),
             ("govt", "Government"), ("ins", "Insurance Company"), ("pay", "Payer"), ("other", "Other"))
CITIES = (("Boston", "MA", "021"), ("Worcester", "MA", "016"), ("Springfield", "MA", "011"),
          ("Hartford", "CT", "061"), ("Providence", "RI", "029"), ("Portland", "ME", "041"))
STREETS = ("Main St", "Washington St", "St James Ave", "Elm St", "Beacon St", "Park Ave", "Oak Rd", "Pine St")
WORDS = ("Green", "Circle", "Acme", "Harbor", "Summit", "Valley", "Bay", "Liberty", "Granite", "Pioneer")
KINDS = ("Medical Group", "Health Center", "Hospital", "Clinic", "Family Practice", "Pediatrics", "Cardiology")
# (LOINC code, display, category, UCUM unit, low, high): the vital signs and labs Synthea emits most.
OBSERVATION_KINDS = (
    ("8302-2", "Body Height", "vital-signs", "cm", 45.0, 200.0),
    ("29463-7", "Body Weight", "vital-signs", "kg", 3.0, 140.0),
    ("39156-5", "Body Mass Index", "vital-signs", "kg/m2", 14.0, 45.0),
    ("8867-4", "Heart rate", "vital-signs", "/min", 50.0, 120.0),
    ("9279-1", "Respiratory rate", "vital-signs", "/min", 10.0, 25.0),
    ("72514-3", "Pain severity - 0-10 verbal numeric rating [Score] - Reported", "vital-signs", "{score}", 0.0, 10.0),
    ("2339-0", "Glucose", "laboratory", "mg/dL", 60.0, 200.0),
    ("2093-3", "Total Cholesterol", "laboratory", "mg/dL", 120.0, 300.0),
    ("4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", "laboratory", "%", 4.0, 11.0),
    ("6299-2", "Urea Nitrogen", "laboratory", "mg/dL", 5.0, 25.0),
)
EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


def organization_id(number: int) -> str:
    return f"bench-org-{number:07d}"


def organization(number: int, rng: random.Random) -> dict[str, Any]:
    city, state, zip_prefix = rng.choice(CITIES)
    street = f"{rng.randint(1, 999)} {rng.choice(STREETS)}"
    type_code, type_display = rng.choice(ORG_TYPES)
    name = f"{rng.choice(WORDS)} {rng.choice(WORDS)} {rng.choice(KINDS)} {number}"
    npi = f"{1_000_000_000 + number * 7919 % 900_000_000}"
    resource = {
        "resourceType": "Organization", "id": organization_id(number), "active": rng.random() > 0.05,
        "extension": [{"url": "http://hl7.org/fhir/us/davinci-pdex-plan-net/StructureDefinition/org-description",
                       "valueString": f"{name}, serving {city} since {rng.randint(1950, 2020)}"}],
        "identifier": [{"use": "official", "system": "http://hl7.org/fhir/sid/us-npi", "value": npi,
                        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                                             "code": "PRN", "display": "Provider number"}]}}],
        "type": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/organization-type",
                              "code": type_code, "display": type_display}], "text": type_display}],
        "name": name, "alias": [name.rsplit(" ", 1)[0], f"{name.split()[0]} {type_code.upper()}"],
        "telecom": [{"system": "phone", "value": f"({rng.randint(200, 999)}) 555-{rng.randint(0, 9999):04d}",
                     "use": "work"},
                    {"system": "email", "value": f"contact{number}@example.org", "use": "work"}],
        "address": [{"use": "work", "type": "both", "text": f"{street}, {city}, {state}",
                     "line": [street], "city": city, "state": state,
                     "postalCode": f"{zip_prefix}{rng.randint(0, 99):02d}", "country": "USA"}],
    }
    if number > 0:
        parent = rng.randrange(max(number // 10, 1))
        resource["partOf"] = {"reference": f"Organization/{organization_id(parent)}", "display": "Parent"}
    return resource


def observation(number: int, rng: random.Random) -> dict[str, Any]:
    code, display, category, unit, low, high = rng.choice(OBSERVATION_KINDS)
    when = EPOCH + timedelta(seconds=rng.randrange(20 * 365 * 86400))
    effective = when.isoformat(timespec="seconds")
    return {
        "resourceType": "Observation", "id": f"bench-obs-{number:08d}", "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                  "code": category, "display": category}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": code, "display": display}], "text": display},
        "subject": {"reference": f"Patient/bench-patient-{number // 40:06d}"},
        "encounter": {"reference": f"Encounter/bench-encounter-{number // 8:07d}"},
        "effectiveDateTime": effective,
        "issued": (when + timedelta(milliseconds=rng.randrange(1000))).isoformat(timespec="milliseconds"),
        "valueQuantity": {"value": round(rng.uniform(low, high), 3), "unit": unit,
                          "system": "http://unitsofmeasure.org", "code": unit},
        "meta": {"tag": [{"system": "https://smarthealthit.org/tags", "code": "synthea-5-2019"}]},
    }


def batches(kind: str, count: int, size: int, seed: int = 42) -> Iterator[list[dict[str, Any]]]:
    """`count` generated resources of `kind` ("Organization" or "Observation"), `size` at a time."""
    make = organization if kind == "Organization" else observation
    rng = random.Random(seed)
    for start in range(0, count, size):
        yield [make(number, rng) for number in range(start, min(start + size, count))]
