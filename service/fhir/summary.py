"""`_summary` and `_elements`: the subset of a resource a client asked for (pure).

`_summary=true` keeps the elements the R4 definitions flag `isSummary`, at every level (a backbone or data
type element keeps only its own summary children); `text` keeps `text`, `id`, `meta` and the mandatory
top-level elements; `data` drops `text`; `_elements` keeps the listed top-level elements (and `id`, `meta`).
A subset is tagged SUBSETTED. The table is `r4-summary-elements.json`, written by `build_summary`.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

import orjson

from service.fhir.errors import invalid

DATA_FILE = "r4-summary-elements.json"
SUMMARY_MODES = frozenset({"true", "text", "data", "count", "false"})
SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED",
             "display": "Resource encoded in summary mode"}
ALWAYS_KEPT = ("resourceType", "id", "meta")


@cache
def _table() -> dict[str, Any]:
    table: dict[str, Any] = orjson.loads(resources.files(__package__).joinpath(DATA_FILE).read_bytes())
    return table


def parse_summary(text: str | None) -> str:
    """The `_summary` mode: true, text, data, count or false (the default)."""
    if text is None:
        return "false"
    if text not in SUMMARY_MODES:
        raise invalid(f"Invalid _summary '{text[:40]}': expected true, text, data, count or false")
    return text


def parse_elements(texts: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    names = [name.strip() for text in texts for name in text.split(",") if name.strip()]
    for name in names:
        if not name.replace("_", "a").isalnum():
            raise invalid(f"Invalid _elements name '{name}': top-level element names are expected")
    return tuple(dict.fromkeys(names))


def subsets(summary: str, elements: tuple[str, ...]) -> bool:
    """Whether these controls show less than the whole resource (`_elements` wins over `_summary`)."""
    return bool(elements) or summary in ("true", "text", "data")


def subset(resource: dict[str, Any], summary: str, elements: tuple[str, ...]) -> dict[str, Any]:
    """The part of `resource` that `_elements` (when given) or `_summary` keeps, tagged SUBSETTED."""
    if elements:
        kept = {name: value for name, value in resource.items() if name in ALWAYS_KEPT or name in elements}
    elif summary == "true":
        kept = _summary_of(resource, str(resource.get("resourceType")))
    elif summary == "text":
        mandatory = _table()["mandatory"].get(resource.get("resourceType"), ())
        kept = {name: value for name, value in resource.items()
                if name in ALWAYS_KEPT or name == "text" or name in mandatory}
    else:
        kept = {name: value for name, value in resource.items() if name != "text"}
    meta = dict(kept.get("meta") or {})
    meta["tag"] = [*meta.get("tag", []), SUBSETTED]
    return {**kept, "resourceType": resource.get("resourceType"), "meta": meta}


def _summary_of(value: dict[str, Any], structure: str) -> dict[str, Any]:
    children = _table()["summary"].get(structure, {})
    kept = ((key, _filtered(item, children[key])) for key, item in value.items() if key in children)
    return {key: item for key, item in kept if item != {} and item != []}  # FHIR JSON has no empty ones


def _filtered(value: Any, structure: str | None) -> Any:
    if structure is None:
        return value
    if isinstance(value, list):
        return [item for item in (_filtered(item, structure) for item in value) if item != {}]
    return _summary_of(value, structure) if isinstance(value, dict) else value
