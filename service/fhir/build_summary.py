"""Regenerate `r4-summary-elements.json`, the R4 summary elements of every resource and data type.

Usage: `python -m service.fhir.build_summary PATH`, PATH being the npm package `hl7.fhir.r4.examples@4.0.1`
(HL7 FHIR R4 4.0.1, CC0-1.0) as a tarball or unpacked directory. It reads the base definitions
(`StructureDefinition-*.json` of kind resource or complex-type that specialise their parent, not profiles)
and writes, beside this file:

- `summary`: structure -> {JSON key of each element with `isSummary` -> the structure its value is
  filtered by, or null to keep it whole}. A structure is a type name (`Observation`, `HumanName`) or the
  path of a backbone element (`Observation.component`); a choice element `value[x]` is listed under each
  of its keys (`valueQuantity`, `valueString`...). Primitive values, extensions and contained resources
  are kept whole.
- `mandatory`: resource type -> the JSON keys of its top-level elements with a minimum cardinality above
  zero, which `_summary=text` keeps.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from service.search.build_definitions import package_files

OUTPUT = Path(__file__).with_name("r4-summary-elements.json")
KEPT_WHOLE = frozenset({"Extension", "Resource", "Narrative", "xhtml"})


def base_definitions(source: Path) -> dict[str, dict[str, Any]]:
    """The specialising resource and complex-type definitions, by type name."""
    found = {}
    for raw in package_files(source, "StructureDefinition-"):
        definition = json.loads(raw)
        if (definition.get("kind") in ("resource", "complex-type") and definition.get("derivation") == "specialization"
                and definition.get("id") == definition.get("type")):
            found[definition["type"]] = definition
    return found


def keys_of(element: dict[str, Any]) -> list[tuple[str, str | None]]:
    """(JSON key, type code) of an element: one per type for a choice element."""
    name = element["path"].rsplit(".", 1)[1]
    types = [kind["code"] for kind in element.get("type", ())]
    if name.endswith("[x]"):
        return [(name[:-3] + code[0].upper() + code[1:], code) for code in types]
    return [(name, types[0] if len(types) == 1 else None)]


def child_structure(element: dict[str, Any], code: str | None, paths: set[str],
                    definitions: dict[str, dict[str, Any]]) -> str | None:
    """What filters the element's value: its backbone path, its data type, or nothing (kept whole)."""
    if "contentReference" in element:
        return str(element["contentReference"]).lstrip("#")
    if element["path"] in paths:  # a backbone element: its children are listed in this snapshot
        return str(element["path"])
    if code is None or code in KEPT_WHOLE or code not in definitions or not code[0].isupper():
        return None
    return code


def structures(definition: dict[str, Any], definitions: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    elements = definition["snapshot"]["element"][1:]  # the first element is the type itself
    parents = {element["path"].rsplit(".", 1)[0] for element in elements}
    table: dict[str, dict[str, Any]] = {}
    for element in elements:
        parent = element["path"].rsplit(".", 1)[0]
        table.setdefault(parent, {})
        if element.get("isSummary"):
            for key, code in keys_of(element):
                table[parent][key] = child_structure(element, code, parents, definitions)
    return table


def mandatory(definition: dict[str, Any]) -> list[str]:
    type_name = definition["type"]
    return [key for element in definition["snapshot"]["element"]
            if element["path"].count(".") == 1 and element["path"].startswith(type_name + ".")
            and element.get("min", 0) > 0 for key, _ in keys_of(element)]


def build(source: Path) -> dict[str, Any]:
    definitions = base_definitions(source)
    summary: dict[str, dict[str, Any]] = {}
    for name in sorted(definitions):
        summary.update(structures(definitions[name], definitions))
    resources = sorted(name for name, definition in definitions.items() if definition["kind"] == "resource")
    return {"summary": dict(sorted(summary.items())),
            "mandatory": {name: mandatory(definitions[name]) for name in resources}}


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        sys.exit(__doc__)
    OUTPUT.write_text(json.dumps(build(Path(argv[0])), separators=(",", ":"), sort_keys=True) + "\n")
    print(f"wrote {OUTPUT}")


if __name__ == "__main__":
    main(sys.argv[1:])
