"""Regenerate `r4-search-parameters.json` from the npm package `hl7.fhir.r4.examples@4.0.1`.

Usage: `python -m service.search.build_definitions PATH` where PATH is the package tarball
(`npm pack hl7.fhir.r4.examples@4.0.1`) or its unpacked directory. The R4 set is the
`SearchParameter-*.json` files that carry a standards-status extension (HL7 FHIR R4 4.0.1, CC0-1.0).
"""

from __future__ import annotations

import json
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

STATUS_EXTENSION = "http://hl7.org/fhir/StructureDefinition/structuredefinition-standards-status"
KEPT_KEYS = ("code", "base", "type", "expression", "target", "url", "modifier", "comparator",
             "multipleOr", "multipleAnd", "component")
OUTPUT = Path(__file__).with_name("r4-search-parameters.json")


def search_parameter_files(source: Path) -> Iterator[bytes]:
    """The raw SearchParameter-*.json files of the tarball or directory."""
    if source.is_dir():
        for path in sorted(source.rglob("SearchParameter-*.json")):
            yield path.read_bytes()
        return
    with tarfile.open(source) as archive:
        for member in sorted(archive.getmembers(), key=lambda m: m.name):
            wanted = Path(member.name).name.startswith("SearchParameter-") and member.name.endswith(".json")
            content = archive.extractfile(member) if wanted else None  # None too for a directory or link
            if content is not None:
                yield content.read()


def is_r4_definition(resource: dict[str, Any]) -> bool:
    return any(ext.get("url") == STATUS_EXTENSION for ext in resource.get("extension", ()))


def compact(resource: dict[str, Any]) -> dict[str, Any]:
    record = {key: resource[key] for key in KEPT_KEYS if key in resource}
    if "component" in record:
        record["component"] = [{"definition": c["definition"], "expression": c["expression"]}
                               for c in record["component"]]
    return record


def build(source: Path) -> list[dict[str, Any]]:
    resources = (json.loads(raw) for raw in search_parameter_files(source))
    records = [compact(r) for r in resources if is_r4_definition(r)]
    return sorted(records, key=lambda r: r["url"])


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    records = build(Path(argv[0]))
    with OUTPUT.open("w", encoding="utf-8") as out:  # one record a line: small diffs on regeneration
        out.write("[\n" + ",\n".join(json.dumps(r, separators=(",", ":")) for r in records) + "\n]\n")
    print(f"wrote {len(records)} search parameters to {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
