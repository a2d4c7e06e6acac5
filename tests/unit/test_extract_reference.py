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
- A `code` element with a required binding listed in `r4-code-systems.json` indexes its code with the
  code system it implies, as HAPI indexes its enumerations. fhirpathpy's values carry no type, so for
  token parameters each `|` branch that is a plain element path is resolved here, independently of the
  compiler, through fhirpathpy's R4 model to its definition path, and that table gives the system.
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
from service.search.rows import IndexRows, TokenRow
from service.search.shapes import shape_converter
from tests.conftest import DATA_DIR

MODEL = models["r4"]
CODE_SYSTEMS = json.loads((Path(__file__).parents[2] / "service/search/r4-code-systems.json").read_text())
PLAIN_PATH = re.compile(r"^[A-Za-z]+(\.[A-Za-z]+)+$")

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


def union_branches(expression: str) -> list[str]:
    """The operands of the top-level `|` operators (outside parentheses and string literals)."""
    branches, depth, quoted, start = [], 0, False, 0
    for position, char in enumerate(expression):
        if char == "'":
            quoted = not quoted
        elif not quoted and char in "()":
            depth += 1 if char == "(" else -1
        elif not quoted and depth == 0 and char == "|":
            branches.append(expression[start:position].strip())
            start = position + 1
    return [*branches, expression[start:].strip()]


def implied_systems(branch: str, resource_type: str) -> dict[str, str] | None:
    """{code: system} when the branch is a plain path to a bound `code` element of the table."""
    if not PLAIN_PATH.match(branch) or branch.split(".")[0] != resource_type:
        return None
    context, type_name = resource_type, None
    for name in branch.split(".")[1:]:
        path = MODEL["pathsDefinedElsewhere"].get(f"{context}.{name}", f"{context}.{name}")
        type_name = MODEL["path2Type"].get(path)  # None: a backbone element
        context = type_name if type_name and type_name[0].isupper() and "Element" not in type_name else path
    value_set = CODE_SYSTEMS["elements"].get(context) if type_name == "code" else None
    if value_set is None:
        return None
    return {code: system for system, codes in CODE_SYSTEMS["value_sets"][value_set].items() for code in codes}


def reference_rows(resource: dict, expression: str, parameter_type: str, code: str) -> set:
    convert, resource_type = shape_converter(parameter_type), resource["resourceType"]
    rows = set()
    for branch in union_branches(expression) if parameter_type == "token" else [expression]:
        systems = implied_systems(branch, resource_type)
        for value in reference_engine(branch, resource_type)(resource):
            bound = systems is not None and isinstance(value, str)
            rows.update([TokenRow(code, systems.get(value), value, None)] if bound else convert(code, value))
    return rows


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
