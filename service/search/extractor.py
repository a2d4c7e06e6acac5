"""The version of the extractor: what decides which index rows a resource gets, besides the custom
SearchParameters (those are the catalog generation). Every write records it with the resource
(`resource.index_extractor`), so rows written by another extractor are known to be stale.

It is one number, readable in decimal: `CCCC UUUUUU DDDDDDDDD` is the code's EXTRACTION_VERSION, the
Unicode database used for folding strings (`unicodedata.unidata_version`, 15.1.0 as 150100), and nine
digits of a hash of the definitions files. Extractors are ordered by code version, then Unicode; a
definitions hash that differs under the same order is a different extractor of unknown age.
"""

from __future__ import annotations

import hashlib
import unicodedata
from dataclasses import dataclass
from functools import cache
from importlib import resources

from service.search.bindings import DATA_FILE as CODE_SYSTEMS_FILE
from service.search.definitions import DATA_FILE as SEARCH_PARAMETERS_FILE

# Bump with every change of the code that changes the rows some resource gets (and pin the new digest).
EXTRACTION_VERSION = 3  # 2: composite parameters; 3: fingerprints sum a digest per row (the rows of 2)
# The definitions digest EXTRACTION_VERSION was set for: a unit test fails when the files change without a bump.
DEFINITIONS_DIGEST = 921_687_982
_CODE, _UNICODE = 10**15, 10**9
AGE_DIVISOR = _UNICODE  # `number // AGE_DIVISOR` orders extractors by age (code version, then Unicode)


@dataclass(frozen=True, slots=True)
class Extractor:
    code: int
    unicode: int  # major * 10,000 + minor * 100 + update
    definitions: int  # 0 to 999,999,999

    @property
    def number(self) -> int:
        """What `resource.index_extractor` holds (a bigint)."""
        return self.code * _CODE + self.unicode * _UNICODE + self.definitions

    @classmethod
    def of(cls, number: int) -> Extractor:
        code, rest = divmod(number, _CODE)
        return cls(code, *divmod(rest, _UNICODE))

    def __str__(self) -> str:
        major, rest = divmod(self.unicode, 10_000)
        return f"extraction {self.code}, Unicode {major}.{rest // 100}.{rest % 100}, definitions {self.definitions:09d}"


def definitions_digest() -> int:
    """Nine decimal digits of the SHA-256 of the definitions files, in a fixed order."""
    digest = hashlib.sha256()
    for name in (SEARCH_PARAMETERS_FILE, CODE_SYSTEMS_FILE):
        digest.update(resources.files(__package__).joinpath(name).read_bytes())
    return int.from_bytes(digest.digest()[:8], "big") % _UNICODE


def unicode_number(version: str) -> int:
    major, minor, update = (int(part) for part in version.split("."))
    return major * 10_000 + minor * 100 + update


@cache
def current() -> Extractor:
    """This process's extractor."""
    return Extractor(EXTRACTION_VERSION, unicode_number(unicodedata.unidata_version), definitions_digest())


def is_stale(stored: int | None, mine: Extractor) -> bool:
    """Rows recorded with `stored` need a full re-extraction by `mine`: unknown (NULL), older, or of the
    same age with other definitions. Rows of a newer extractor are not: its replicas keep them."""
    if stored is None:
        return True
    return stored != mine.number and not is_newer(stored, mine)


def is_newer(stored: int, mine: Extractor) -> bool:
    return stored // AGE_DIVISOR > mine.number // AGE_DIVISOR
