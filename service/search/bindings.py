"""The code system a bound `code` element implies, as HAPI indexes it.

HAPI reads a `code` element with a required binding to an enumerable value set as an enumeration, and
indexes each known code with its code system (`Patient.gender` `male` as
`http://hl7.org/fhir/administrative-gender|male`); a code outside the value set keeps no system. The
table `r4-code-systems.json` holds those elements for the built-in token parameters; `build_definitions`
extracts it from the R4 definitions and says which elements it leaves out.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from importlib import resources

import orjson

DATA_FILE = "r4-code-systems.json"


@cache
def _value_sets_by_element() -> dict[str, dict[str, str]]:
    """Element path -> {code: system}, read once from the package data."""
    table = orjson.loads(resources.files(__package__).joinpath(DATA_FILE).read_bytes())
    systems = {url: {code: system for system, codes in listed.items() for code in codes}
               for url, listed in table["value_sets"].items()}
    return {path: systems[url] for path, url in table["elements"].items()}


def implied_systems(path: str) -> Mapping[str, str] | None:
    """{code: system} of the bound `code` element at this definition path, or None when it implies none."""
    return _value_sets_by_element().get(path)
