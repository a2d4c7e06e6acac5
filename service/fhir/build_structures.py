"""Regenerate the shipped R4 structure table from the npm package `hl7.fhir.r4.examples@4.0.1` (HL7 FHIR R4
4.0.1, CC0-1.0).

Usage: `python -m service.fhir.build_structures PATH` where PATH is the package tarball (`npm pack
hl7.fhir.r4.examples@4.0.1`) or its unpacked directory. It reads the snapshots of the base definitions
(`StructureDefinition-*.json` with `derivation: specialization`: every resource, data type and primitive
type; not profiles, extensions or logical models) and writes `r4-structures.json.gz` beside this file:

- `primitives`: primitive type -> [JSON kind, regex], the kind (`boolean`, `integer`, `decimal` or
  `string`) of the root of its base chain, and the regex its definition publishes (`xhtml` has none).
- `types`: type -> {JSON key: [type, max, min]} for every resource and complex data type, and for every
  backbone element, which is a type of its own named by its path (`Patient.contact`); a `contentReference`
  (`Questionnaire.item.item`) names the backbone it repeats. A choice element is one key per type
  (`valueQuantity`), with its name (`value`) as a fourth item. Types: a data type, a primitive type, a
  backbone path, or `Resource` (a contained or inline resource of any type). `max` is "1" or "*".

Two readings of the definitions: elements typed with FHIRPath system types (`Element.id`, `Extension.url`,
the `value` of primitives) take the FHIR type their `structuredefinition-fhir-type` extension names; and
a resource's own `id` is an `id` (the snapshots say `string`, but R4 defines the logical id as an `id`).
"""

from __future__ import annotations

import gzip
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from service.search.build_definitions import package_files

OUTPUT = Path(__file__).with_name("r4-structures.json.gz")
FHIR_TYPE_EXTENSION = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type"
REGEX_EXTENSION = "http://hl7.org/fhir/StructureDefinition/regex"
SYSTEM_TYPES = {"System.Boolean": "boolean", "System.Integer": "integer", "System.Decimal": "decimal"}
JSON_KINDS = ("boolean", "integer", "decimal")  # any other primitive is a JSON string
BACKBONE_TYPES = ("BackboneElement", "Element")


def base_structures(source: Path) -> dict[str, dict[str, Any]]:
    """The package's base definitions (resources, data types, primitive types, and the roots `Resource` and
    `Element`) by name."""
    found = (json.loads(raw) for raw in package_files(source, "StructureDefinition-"))
    return {d["id"]: d for d in found if d.get("kind") != "logical"
            and (d.get("derivation") == "specialization" or "baseDefinition" not in d)}


def element_type(element: dict[str, Any], code: dict[str, Any]) -> str:
    if element.get("base", {}).get("path") == "Resource.id":
        return "id"
    name = str(code["code"])
    if not name.startswith("http://hl7.org/fhirpath/"):
        return name
    named = [ext["valueUrl"] for ext in code.get("extension", ()) if ext.get("url") == FHIR_TYPE_EXTENSION]
    return named[0] if named else SYSTEM_TYPES.get(name.rsplit("/", 1)[1], "string")


def primitive(structure: dict[str, Any], structures: dict[str, dict[str, Any]]) -> list[str]:
    """[JSON kind, regex] of a primitive type."""
    root = structure
    while root["id"] not in JSON_KINDS and root["baseDefinition"].endswith(tuple(f"/{p}" for p in JSON_KINDS)):
        root = structures[root["baseDefinition"].rsplit("/", 1)[1]]
    kind = root["id"] if root["id"] in JSON_KINDS else "string"
    value = next(e for e in structure["snapshot"]["element"] if e["path"] == f"{structure['id']}.value")
    regexes = [ext["valueString"] for code in value.get("type", ()) for ext in code.get("extension", ())
               if ext.get("url") == REGEX_EXTENSION]
    return [kind, regexes[0] if regexes else ""]


def type_table(structure: dict[str, Any]) -> dict[str, dict[str, list[Any]]]:
    """{owner: {JSON key: [type, max, min(, choice name)]}} of one definition: the type and its backbones."""
    elements = structure["snapshot"]["element"][1:]
    parents = {element["path"].rsplit(".", 1)[0] for element in elements}
    table: dict[str, dict[str, list[Any]]] = {structure["id"]: {}}
    for element in elements:
        if element["max"] == "0":
            continue
        path: str = element["path"]
        owner, name = path.rsplit(".", 1)
        entries = table.setdefault(owner, {})
        limits = [element["max"], element["min"]]
        if "contentReference" in element:
            entries[name] = [element["contentReference"].lstrip("#"), *limits]
            continue
        codes = element["type"]
        if path in parents and codes[0]["code"] in BACKBONE_TYPES:
            entries[name] = [path, *limits]
        elif name.endswith("[x]"):
            for code in codes:
                type_name = element_type(element, code)
                entries[name[:-3] + type_name[0].upper() + type_name[1:]] = [type_name, *limits, name[:-3]]
        else:
            (code,) = codes  # outside choices, every R4 element has one type
            entries[name] = [element_type(element, code), *limits]
    return table


def build(source: Path) -> dict[str, dict[str, Any]]:
    structures = base_structures(source)
    primitives = {name: primitive(s, structures) for name, s in sorted(structures.items())
                  if s["kind"] == "primitive-type"}
    types: dict[str, dict[str, list[Any]]] = {}
    for name, structure in sorted(structures.items()):
        if structure["kind"] != "primitive-type":
            types.update(type_table(structure))
    check_references(types, primitives)
    return {"primitives": primitives, "types": dict(sorted(types.items()))}


def check_references(types: dict[str, dict[str, list[Any]]], primitives: Iterable[str]) -> None:
    """Every element type is one the table defines: a reading error fails the build, not a request."""
    known = set(types) | set(primitives)
    unknown = {entry[0] for entries in types.values() for entry in entries.values()} - known
    if unknown:
        raise SystemExit(f"element types without a definition: {sorted(unknown)}")


def write(path: Path, table: dict[str, dict[str, Any]]) -> None:
    """One type a line (so a regeneration's changes read well once unzipped); mtime 0 for equal bytes."""
    sections = [f'"{name}": {{\n' + ",\n".join(f"{json.dumps(key)}: {json.dumps(value, separators=(',', ':'))}"
                                                for key, value in entries.items()) + "\n}"
                for name, entries in table.items()]
    text = "{\n" + ",\n".join(sections) + "\n}\n"
    path.write_bytes(gzip.compress(text.encode(), mtime=0))


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    table = build(Path(argv[0]))
    write(OUTPUT, table)
    print(f"wrote {len(table['types'])} types and {len(table['primitives'])} primitive types to {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
