"""`near` on Plan-Net's Locations: results equal a great-circle filter computed here from their positions."""

from __future__ import annotations

import gzip
import math
from functools import cache
from typing import Any

import orjson
import pytest

from tests.conftest import DATA_DIR
from tests.search_data import search_ids

PLANNET_LOCATIONS = pytest.mark.dataset("plannet/Location.ndjson.gz")
KM_PER_MILE = 1.609344


@cache
def positions() -> dict[str, tuple[float, float]]:
    with gzip.open(DATA_DIR / "plannet" / "Location.ndjson.gz", "rb") as lines:
        located = (orjson.loads(line) for line in lines)
        return {loc["id"]: (loc["position"]["latitude"], loc["position"]["longitude"])
                for loc in located if "position" in loc}


def km_between(a: tuple[float, float], b: tuple[float, float]) -> float:
    (lat1, lon1), (lat2, lon2) = (tuple(map(math.radians, point)) for point in (a, b))
    h = math.sin((lat2 - lat1) / 2) ** 2 + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    return 2 * 6371.0 * math.asin(math.sqrt(h))


def within(centre: tuple[float, float], km: float) -> set[str]:
    return {res_id for res_id, point in positions().items() if km_between(centre, point) <= km}


async def near(client: Any, value: str) -> set[str]:
    return await search_ids(client, f"/fhir/Location?near={value}&_count=500&_elements=id")


@PLANNET_LOCATIONS
@pytest.mark.parametrize(("km", "units", "factor"), [(5, "km", 1), (25, "", 1), (10, "mi", KM_PER_MILE),
                                                      (300, "km", 1), (2000, "mi", KM_PER_MILE)])
async def test_near_equals_a_great_circle_filter(client, km, units, factor):
    centre = sorted(positions().values())[len(positions()) // 2]  # a Location's own position
    wanted = within(centre, km * factor)
    assert wanted  # the centre itself at least
    value = f"{centre[0]}|{centre[1]}|{km}" + (f"|{units}" if units else "")
    assert await near(client, value) == wanted


@PLANNET_LOCATIONS
async def test_near_without_distance_matches_the_exact_position(client):
    res_id, centre = next(iter(positions().items()))
    assert res_id in await near(client, f"{centre[0]}|{centre[1]}")
    assert await near(client, f"{centre[0]}|{centre[1]}") == {i for i, p in positions().items() if p == centre}


@PLANNET_LOCATIONS
async def test_near_across_the_antimeridian_and_missing(client):
    written = {"resourceType": "Location", "name": "Fiji east", "position": {"latitude": -17.7, "longitude": 179.9}}
    response = await client.post("/fhir/Location", data=orjson.dumps(written),
                                 headers={"Content-Type": "application/fhir+json"})
    assert response.status == 201
    created = (await response.json(content_type=None))["id"]
    assert await near(client, "-17.7|-179.9|50|km") == {created}  # 21 km away, on the other side of 180°
    assert await near(client, "-17.7|-179.9|10|km") == set()
    with_position = await search_ids(client, "/fhir/Location?near:missing=false&_count=500&_elements=id")
    assert with_position == set(positions()) | {created}


@pytest.mark.parametrize("value", ["1", "91|0|1", "0|181|1", "0|0|-1", "0|0|10001|km", "0|0|1|furlong", "a|0"])
async def test_invalid_near_values_are_refused(client, value):
    response = await client.get(f"/fhir/Location?near={value}")
    assert response.status == 400
