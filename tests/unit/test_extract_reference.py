"""Extraction checked against the reference engine, fhirpathpy, on samples of the shared data.

For up to SAMPLE resources of every data file, every applicable R4 expression is evaluated by
fhirpathpy; its values go through the same value -> row conversion (typed by shape), and the row
set must equal what `Registry.extract` produced for that (resource, parameter). This checks the
compiled path evaluation (choice types, where, as, unions, indexers) against a full engine.

Intentional differences, applied to the fhirpathpy side before comparing (keep this list short):
- `Resource.`/`DomainResource.` heads are rewritten to the resource type: fhirpathpy 2.2.4 evaluates
  `Resource.id` and `Resource.meta.*` to nothing on a concrete resource (our fallback does the same).
- `where(resolve() is T)` becomes a test that the literal reference ends in `T/id` (optionally
  `/_history/n`): fhirpathpy has no resolve(); we resolve by the literal reference's type.
- `x as T` and `x.as(T)` become `x.ofType(T)`: fhirpathpy raises on `as` over several items (e.g.
  `Observation.component.value as Quantity`); we filter each item by type, as HAPI does.
- Extension values are unwrapped by the conversion, so fhirpathpy's Extension results index their
  value[x] exactly as ours do: no rewrite needed.
"""

from __future__ import annotations

import functools
import gzip
import json
import re
from pathlib import Path

import fhirpathpy
import orjson
import pytest
from fhirpathpy.models import models

from service.search.registry import Registry
from service.search.rows import IndexRows
from service.search.shapes import shape_converter
from tests.conftest import DATA_DIR

SAMPLE = 50
RESOLVE_IS = re.compile(r"resolve\(\) is (\w+)")
AS_OPERATOR = re.compile(r" as (\w+)")
AS_FUNCTION = re.compile(r"\.as\((\w+)\)")
ABSTRACT_HEAD = re.compile(r"(?<![\w.])(?:Resource|DomainResource)\.")
DATA_FILES = sorted(DATA_DIR.glob("*/*.ndjson.gz"))
PLANNET_FILES = [path for path in DATA_FILES if path.parent.name == "plannet"]
REGISTRY = Registry.builtin()
PLANNET_REGISTRY = Registry.builtin()  # with the Plan-Net IG's custom parameters (extensions, redefinitions)
for entry in json.loads((DATA_DIR / "plannet" / "plannet-searchparameters.bundle.json").read_text())["entry"]:
    PLANNET_REGISTRY.add_resource(entry["resource"])


def reference_expression(expression: str, resource_type: str) -> str:
    expression = ABSTRACT_HEAD.sub(f"{resource_type}.", expression)
    expression = AS_FUNCTION.sub(r".ofType(\1)", AS_OPERATOR.sub(r".ofType(\1)", expression))
    return RESOLVE_IS.sub(r"reference.matches('^([^#?]*/)?\1/[^/?]+(/_history/[^/]+)?$')", expression)


@functools.cache
def reference_engine(expression: str, resource_type: str):
    return fhirpathpy.compile(reference_expression(expression, resource_type), models["r4"])


def sample(path: Path) -> list[dict]:
    with gzip.open(path) as lines:
        return [orjson.loads(line) for line, _ in zip(lines, range(SAMPLE))]


def rows_of(rows: IndexRows, code: str) -> set:
    return {row for row in rows.all_rows() if row.code == code}


def reference_rows(resource: dict, expression: str, parameter_type: str, code: str) -> set:
    convert = shape_converter(parameter_type)
    values = reference_engine(expression, resource["resourceType"])(resource)
    return {row for value in values for row in convert(code, value)}


def test_the_data_is_there():
    assert len(DATA_FILES) >= 40, f"shared data not found under {DATA_DIR}"


def check_sample(registry: Registry, path: Path) -> None:
    checked = 0
    for resource in sample(path):
        extracted = registry.extract(resource)
        for parameter in registry.parameters(resource["resourceType"]):
            if not parameter.branches:
                continue
            definition = parameter.definition
            expected = reference_rows(resource, definition.expression, definition.type, definition.code)
            got = rows_of(extracted, definition.code)
            assert got == expected, (resource["id"], definition.code, definition.expression)
            assert (definition.code in extracted.missing) == (not got)
            checked += bool(got)
    assert checked > 0


def file_id(path: Path) -> str:
    return f"{path.parent.name}/{path.name.split('.')[0]}"


@pytest.mark.parametrize("path", DATA_FILES, ids=file_id)
def test_rows_match_fhirpathpy(path: Path):
    check_sample(REGISTRY, path)


@pytest.mark.parametrize("path", PLANNET_FILES, ids=file_id)
def test_plannet_custom_rows_match_fhirpathpy(path: Path):
    check_sample(PLANNET_REGISTRY, path)
