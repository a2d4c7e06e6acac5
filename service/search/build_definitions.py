"""Regenerate the shipped R4 tables from the npm package `hl7.fhir.r4.examples@4.0.1` (HL7 FHIR R4 4.0.1, CC0-1.0).

Usage: `python -m service.search.build_definitions PATH` where PATH is the package tarball
(`npm pack hl7.fhir.r4.examples@4.0.1`) or its unpacked directory. It writes two files beside this one:

- `r4-search-parameters.json`: the `SearchParameter-*.json` files that carry a standards-status extension.
- `r4-code-systems.json`: the code system each code implies in the `code` elements that the built-in
  token parameters index, for the elements with a required binding (`StructureDefinition-*.json` of the
  base resources and data types, not profiles) to a value set whose codes the package enumerates
  (`ValueSet-*.json`, `CodeSystem-*.json`). HAPI's R4 model reads exactly such elements as enumerations
  and indexes a token's system from them. Value sets that name a code system the package does not
  list (mime types, languages) cannot be enumerated and are left out, and so is `resource-types`, which
  HAPI's R4 model keeps as a plain `code`. Layout: `{"elements": {path: value set}, "value_sets":
  {value set: {system: [code, ...]}}}`.
- `r4-repeating-elements.json`: the paths of the elements that repeat (`max` other than 1) in the base
  resources and data types, which FHIR JSON writes as arrays (FHIRPath Patch needs it to add an element).
"""

from __future__ import annotations

import json
import sys
import tarfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from service.search.fhirpath_compiler import compile_expression
from service.search.fhirpath_parser import Unsupported
from service.search.registry import concrete_types

STATUS_EXTENSION = "http://hl7.org/fhir/StructureDefinition/structuredefinition-standards-status"
KEPT_KEYS = ("code", "base", "type", "expression", "target", "url", "modifier", "comparator",
             "multipleOr", "multipleAnd", "component")
OUTPUT = Path(__file__).with_name("r4-search-parameters.json")
CODE_SYSTEMS_OUTPUT = Path(__file__).with_name("r4-code-systems.json")
REPEATING_OUTPUT = Path(__file__).with_name("r4-repeating-elements.json")
PLAIN_CODE_VALUE_SETS = frozenset({"http://hl7.org/fhir/ValueSet/resource-types"})  # plain `code` in HAPI


def package_files(source: Path, prefix: str) -> Iterator[bytes]:
    """The raw `{prefix}*.json` files of the tarball or directory."""
    if source.is_dir():
        for path in sorted(source.rglob(f"{prefix}*.json")):
            yield path.read_bytes()
        return
    with tarfile.open(source) as archive:
        for member in sorted(archive.getmembers(), key=lambda m: m.name):
            wanted = Path(member.name).name.startswith(prefix) and member.name.endswith(".json")
            content = archive.extractfile(member) if wanted else None  # None too for a directory or link
            if content is not None:
                yield content.read()


def by_url(source: Path, resource_type: str) -> dict[str, dict[str, Any]]:
    """The package's resources of one type, by canonical URL."""
    resources = (json.loads(raw) for raw in package_files(source, f"{resource_type}-"))
    return {r["url"]: r for r in resources if r.get("resourceType") == resource_type and "url" in r}


def is_r4_definition(resource: dict[str, Any]) -> bool:
    return any(ext.get("url") == STATUS_EXTENSION for ext in resource.get("extension", ()))


def compact(resource: dict[str, Any]) -> dict[str, Any]:
    record = {key: resource[key] for key in KEPT_KEYS if key in resource}
    if "component" in record:
        record["component"] = [{"definition": c["definition"], "expression": c["expression"]}
                               for c in record["component"]]
    return record


def build(source: Path) -> list[dict[str, Any]]:
    resources = (json.loads(raw) for raw in package_files(source, "SearchParameter-"))
    records = [compact(r) for r in resources if is_r4_definition(r)]
    return sorted(records, key=lambda r: r["url"])


def indexed_code_paths(records: Iterable[dict[str, Any]]) -> set[str]:
    """Definition paths of the `code` elements that the token parameters' expressions select."""
    paths: set[str] = set()
    for record in records:
        if record["type"] != "token" or not record.get("expression"):
            continue
        for resource_type in concrete_types(record["base"]):
            try:
                branches = compile_expression(record["expression"], resource_type)
            except Unsupported:  # evaluated by fhirpathpy: untyped, so no binding applies
                continue
            paths.update(branch.path for branch in branches if branch.type == "code")
    return paths


def required_bindings(structures: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Element path -> value set URL (no version) of every required binding on a `code` element."""
    bindings = {}
    for structure in structures.values():
        if structure.get("derivation") == "constraint":  # profiles and extensions
            continue
        for element in structure.get("snapshot", {}).get("element", ()):
            binding = element.get("binding", {})
            if binding.get("strength") == "required" and any(t.get("code") == "code" for t in element.get("type", ())):
                bindings[element["path"].removesuffix("[x]")] = binding["valueSet"].split("|")[0]
    return bindings


def concept_codes(concepts: Iterable[dict[str, Any]]) -> Iterator[str]:
    for concept in concepts:
        yield concept["code"]
        yield from concept_codes(concept.get("concept", ()))


def include_codes(include: dict[str, Any], code_systems: dict[str, dict[str, Any]]) -> list[str] | None:
    """The codes one `compose.include` (or `exclude`) of a system lists; None when it cannot be enumerated."""
    if include.get("filter") or include.get("valueSet"):
        return None
    if "concept" in include:
        return [concept["code"] for concept in include["concept"]]
    code_system = code_systems.get(include["system"])
    if code_system is None or code_system.get("content") != "complete":
        return None
    return list(concept_codes(code_system.get("concept", ())))


def value_set_codes(url: str, value_sets: dict[str, dict[str, Any]],
                    code_systems: dict[str, dict[str, Any]]) -> dict[str, str] | None:
    """code -> system of every code in the value set; None when the package cannot enumerate it."""
    compose = value_sets.get(url, {}).get("compose")
    if compose is None:
        return None
    codes: dict[str, str] = {}
    for include in compose.get("include", ()):
        if "system" not in include:  # only other value sets
            imported = [value_set_codes(v.split("|")[0], value_sets, code_systems) for v in include["valueSet"]]
            if None in imported:
                return None
            codes.update(*imported)
            continue
        listed = include_codes(include, code_systems)
        if listed is None:
            return None
        codes.update(dict.fromkeys(listed, include["system"]))
    for exclude in compose.get("exclude", ()):
        listed = include_codes(exclude, code_systems) if "system" in exclude else None
        if listed is None:
            return None
        for code in listed:
            codes.pop(code, None)
    return codes or None


def build_code_systems(source: Path, records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    bindings = required_bindings(by_url(source, "StructureDefinition"))
    value_sets, code_systems = by_url(source, "ValueSet"), by_url(source, "CodeSystem")
    elements: dict[str, str] = {}
    systems: dict[str, dict[str, list[str]]] = {}
    for path in sorted(indexed_code_paths(records)):
        value_set = bindings.get(path)
        if value_set is None or value_set in PLAIN_CODE_VALUE_SETS:
            continue
        codes = value_set_codes(value_set, value_sets, code_systems)
        if codes:
            elements[path] = value_set
            systems[value_set] = {system: [c for c, s in codes.items() if s == system] for system in codes.values()}
    return {"elements": elements, "value_sets": dict(sorted(systems.items()))}


def repeating_elements(structures: dict[str, dict[str, Any]]) -> list[str]:
    """Element paths (`Patient.name`, `HumanName.given`; choice elements without `[x]`) whose `max` is not 1."""
    paths = set()
    for structure in structures.values():
        if structure.get("derivation") == "constraint":  # profiles and extensions
            continue
        for element in structure.get("snapshot", {}).get("element", ()):
            if "." in element["path"] and element.get("max") not in ("0", "1"):
                paths.add(element["path"].removesuffix("[x]"))
    return sorted(paths)


def write_sections(path: Path, table: dict[str, dict[str, Any]]) -> None:
    """JSON with one entry a line: small diffs on regeneration."""
    sections = [f'"{name}": {{\n' + ",\n".join(f"{json.dumps(key)}: {json.dumps(value, separators=(',', ':'))}"
                                                for key, value in entries.items()) + "\n}"
                for name, entries in table.items()]
    path.write_text("{\n" + ",\n".join(sections) + "\n}\n", encoding="utf-8")


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    records = build(Path(argv[0]))
    with OUTPUT.open("w", encoding="utf-8") as out:  # one record a line: small diffs on regeneration
        out.write("[\n" + ",\n".join(json.dumps(r, separators=(",", ":")) for r in records) + "\n]\n")
    print(f"wrote {len(records)} search parameters to {OUTPUT}")
    table = build_code_systems(Path(argv[0]), records)
    write_sections(CODE_SYSTEMS_OUTPUT, table)
    print(f"wrote the code systems of {len(table['elements'])} bound code elements to {CODE_SYSTEMS_OUTPUT}")
    repeating = repeating_elements(by_url(Path(argv[0]), "StructureDefinition"))
    REPEATING_OUTPUT.write_text("[\n" + ",\n".join(json.dumps(path) for path in repeating) + "\n]\n", encoding="utf-8")
    print(f"wrote {len(repeating)} repeating element paths to {REPEATING_OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
