"""What `python -m service load` reads: NDJSON files (one resource a line) and JSON files holding a
Bundle (its entries' resources) or one resource, plain or gzip; each resource with where it came from."""

from __future__ import annotations

import gzip
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, cast
from uuid import uuid4

from service.fhir.errors import FhirError
from service.fhir.resource import Submitted, check_id, check_resource, check_type, parse_resource

NDJSON_SUFFIXES = (".ndjson", ".ndjson.gz")
JSON_SUFFIXES = (".json", ".json.gz")
# A resource, and where it came from: `file:line` or `file: entry N`.
Located = tuple[str, Submitted]
Report = Callable[[str], None]  # takes one problem line


class UnreadableSource(Exception):
    """A path that does not exist or a file that cannot be read: the load stops."""


def source_files(paths: list[str]) -> list[Path]:
    """The files named, directories expanded to their NDJSON and JSON files; every one is opened once
    here, so a typo or a missing permission stops the load before anything is written."""
    found = [file for name in paths for file in _expand(Path(name))]
    for file in found:
        try:
            file.open("rb").close()
        except OSError as exc:
            raise UnreadableSource(f"{file}: {exc.strerror or exc}") from None
    return found


def _expand(path: Path) -> list[Path]:
    if not path.exists():
        raise UnreadableSource(f"{path}: no such file or directory")
    if not path.is_dir():
        return [path]
    try:
        return sorted(file for file in path.iterdir() if file.name.endswith(NDJSON_SUFFIXES + JSON_SUFFIXES))
    except OSError as exc:
        raise UnreadableSource(f"{path}: {exc.strerror or exc}") from None


def read_resources(path: Path, report: Report) -> Iterator[Located]:
    """Valid resources of one file; each invalid one is reported as one line and skipped. A `.json` file
    holds a Bundle or one resource; any other file is NDJSON."""
    read = _json_file if path.name.endswith(JSON_SUFFIXES) else _ndjson_file
    try:
        yield from read(path, report)
    except (OSError, EOFError) as exc:  # EOFError: a truncated gzip stream
        raise UnreadableSource(f"{path}: cannot be read: {exc}") from None


def validated(submitted: Submitted) -> Submitted:
    """The checks of a create or update; a resource without an id gets a server-assigned one (the
    stored body gets it from the write, as every id)."""
    resource = submitted.values
    res_type = check_type(str(resource.get("resourceType") or ""))
    check_resource(resource, res_type)
    if resource.get("id") is None:
        resource["id"] = str(uuid4())
    check_id(str(resource["id"]))
    return submitted


def _open(path: Path) -> IO[bytes]:
    return cast(IO[bytes], gzip.open(path, "rb")) if path.name.endswith(".gz") else path.open("rb")


def _ndjson_file(path: Path, report: Report) -> Iterator[Located]:
    with _open(path) as lines:
        for number, line in enumerate(lines, start=1):
            line = line.strip()  # so a JSON error's column counts from the line's first character
            if not line:
                continue
            where = f"{path}:{number}"
            try:
                yield where, validated(parse_resource(line, "line"))
            except FhirError as exc:
                report(f"{where}: {exc.diagnostics}")


def _json_file(path: Path, report: Report) -> Iterator[Located]:
    with _open(path) as source:
        raw = source.read()
    try:
        document = parse_resource(raw, "file")
    except FhirError as exc:
        report(f"{path}: {exc.diagnostics}")
        return
    if document.values.get("resourceType") != "Bundle":
        yield from _checked(str(path), document, report)
        return
    entries = document.values.get("entry") or []
    if not isinstance(entries, list):
        report(f"{path}: the Bundle's 'entry' must be a JSON array")
        return
    for number, (entry, exact_entry) in enumerate(zip(entries, document.exact.get("entry") or []), start=1):
        where = f"{path}: entry {number}"
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if isinstance(resource, dict):
            # Both trees have the same shape: the exact one differs only in how numbers are held.
            yield from _checked(where, Submitted(resource, exact_entry["resource"]), report)
        else:
            report(f"{where}: the entry holds no resource (a JSON object in 'resource')")


def _checked(where: str, submitted: Submitted, report: Report) -> Iterator[Located]:
    try:
        yield where, validated(submitted)
    except FhirError as exc:
        report(f"{where}: {exc.diagnostics}")
