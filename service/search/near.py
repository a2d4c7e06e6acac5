"""`near` on Location (pure): `latitude|longitude|distance|units`, and its SQL on idx_position.

As HAPI FHIR: no distance (or 0) matches the coordinates exactly, and a distance beyond 10,000 km is refused.
Unlike HAPI, which keeps every position within a bounding box and reads the distance as km whatever the units,
the units are honoured and the box only narrows the rows before an exact great-circle test.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from service.fhir.errors import invalid
from service.search.rows import PositionRow, Row

EARTH_RADIUS_KM = 6371.0  # the mean radius
MAX_DISTANCE_KM = 10_000.0  # HAPI's limit: a box beyond it would wrap around the globe
UNITS_KM = {"": 1.0, "km": 1.0, "m": 0.001, "mi": 1.609344, "[mi_i]": 1.609344}
# The haversine great-circle distance in km from the query point to the row's position.
DISTANCE_SQL = ("{r} * 2 * asin(least(1.0, sqrt(power(sin(radians(latitude - {lat}) / 2), 2) + cos(radians({lat})) "
                "* cos(radians(latitude)) * power(sin(radians(longitude - {lon}) / 2), 2))))")


def position_rows(code: str, position: dict[str, Any]) -> tuple[Row, ...]:
    """Location.position's latitude and longitude (degrees), when both are numbers within range."""
    latitude: Any = position.get("latitude")
    longitude: Any = position.get("longitude")
    if not (is_number(latitude) and is_number(longitude) and abs(latitude) <= 90 and abs(longitude) <= 180):
        return ()
    return (PositionRow(code, float(latitude), float(longitude)),)


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float, Decimal)) and type(value) is not bool and math.isfinite(value)


@dataclass(frozen=True, slots=True)
class NearMatch:
    latitude: float
    longitude: float
    distance_km: float  # 0: the exact coordinates


def parse_near(text: str) -> NearMatch:
    parts = text.split("|")
    if not 2 <= len(parts) <= 4:
        raise invalid(f"Invalid near '{text}': expected latitude|longitude[|distance[|units]]")
    latitude, longitude = coordinate(text, parts[0], 90), coordinate(text, parts[1], 180)
    distance = coordinate(text, parts[2], math.inf) if len(parts) > 2 and parts[2] else 0.0
    units = parts[3] if len(parts) > 3 else ""
    if units not in UNITS_KM:
        raise invalid(f"Invalid near '{text}': units must be km, m or mi")
    distance_km = distance * UNITS_KM[units]
    if not 0 <= distance_km <= MAX_DISTANCE_KM:
        raise invalid(f"Invalid near '{text}': the distance must be between 0 and {MAX_DISTANCE_KM:g} km")
    return NearMatch(latitude, longitude, distance_km)


def coordinate(text: str, part: str, limit: float) -> float:
    try:
        value = float(part)
    except ValueError:
        raise invalid(f"Invalid near '{text}': '{part}' is not a number") from None
    if not math.isfinite(value) or abs(value) > limit:
        raise invalid(f"Invalid near '{text}': '{part}' is out of range")
    return value


def near_condition(value: NearMatch, add: Callable[[object], str]) -> str:
    """The condition on idx_position's columns; `add` makes a `$n` parameter of a float."""
    lat, lon = add(value.latitude), add(value.longitude)
    if value.distance_km == 0:
        return f"latitude = {lat} AND longitude = {lon}"
    angle = value.distance_km / EARTH_RADIUS_KM  # radians along the surface
    low, high = value.latitude - math.degrees(angle), value.latitude + math.degrees(angle)
    conditions = [f"latitude >= {add(low)}", f"latitude <= {add(high)}"]
    if -90 < low and high < 90:  # a box that reaches a pole spans every longitude
        spread = math.degrees(math.asin(min(1.0, math.sin(angle) / math.cos(math.radians(value.latitude)))))
        west, east = value.longitude - spread, value.longitude + spread
        if west < -180 or east > 180:  # across the antimeridian: two ranges
            west, east = (west + 360, east) if west < -180 else (west, east - 360)
            conditions.append(f"(longitude >= {add(west)} OR longitude <= {add(east)})")
        else:
            conditions.append(f"longitude >= {add(west)} AND longitude <= {add(east)}")
    distance = DISTANCE_SQL.format(r=add(EARTH_RADIUS_KM), lat=lat, lon=lon)
    conditions.append(f"{distance} <= {add(value.distance_km)}")
    return " AND ".join(conditions)
