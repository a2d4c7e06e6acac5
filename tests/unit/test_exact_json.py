"""Parsing that keeps numbers as written, on generated JSON texts: re-serialised, a text must equal its
lossless compaction (the one of `optimizeStorage`), and orjson's own tree must be used exactly when it
writes every number back as written."""

from __future__ import annotations

import random

import orjson
import pytest

from service.fhir import exact_json
from service.jobs.storage_step import compact_body

# Spellings orjson writes back otherwise (1.5, 100.0, 1e-7, 0, a float ...), and ones it keeps.
RESPELLED = ["1.50", "0.10", "1.0e2", "1E-7", "-0", "123456789012345678901234567890", "2.5E+3", "100.00",
             "18446744073709551616", "-9223372036854775809", "1e5"]
KEPT = ["1.5", "0", "-0.0", "7", "-12", "0.1", "1e-7", "100.0", "9223372036854775807", "1.2345678901234568e+29"]
# String pieces that look like numbers, or could hide the end of a string from a careless scan.
STRING_PIECES = ["1.50", "0.10", "1E-7", "-0", '"', "\\", '\\"', ":", ",", "[", "]", "{", " ", "é", "e", "x", "\n"]
SPACES = ["", "", " ", "\n  ", "\t"]


def generated(rng: random.Random, depth: int, respelled: list[bool]) -> str:
    """A JSON text with random whitespace; `respelled` records whether it holds a RESPELLED number."""
    kind = rng.choice(["object", "array", "string", "number", "literal"] if depth else ["string", "number", "literal"])
    space = rng.choice(SPACES)
    if kind == "object":
        keys = {string(rng) for _ in range(rng.randrange(4))}
        members = [f"{space}{key}{space}:{space}{generated(rng, depth - 1, respelled)}" for key in keys]
        return "{" + ",".join(members) + space + "}"
    if kind == "array":
        return "[" + ",".join(space + generated(rng, depth - 1, respelled) for _ in range(rng.randrange(4))) + "]"
    if kind == "string":
        return string(rng)
    if kind == "literal":
        return rng.choice(["true", "false", "null"])
    number = rng.choice(RESPELLED + KEPT)
    respelled.append(number in RESPELLED)
    return number


def string(rng: random.Random) -> str:
    """A JSON string as orjson writes it, so that compaction and orjson agree on its escapes."""
    return orjson.dumps("".join(rng.choice(STRING_PIECES) for _ in range(rng.randrange(6)))).decode()


def test_generated_texts_keep_every_number_and_take_the_fast_path_only_when_safe():
    rng = random.Random(20240611)
    fast = 0
    for _ in range(3000):
        respelled: list[bool] = []
        raw = ("{" + rng.choice(SPACES) + '"r":' + generated(rng, 3, respelled) + "}").encode()
        values, exact = exact_json.parse(raw)
        assert orjson.dumps(exact) == compact_body(raw), raw
        assert values == orjson.loads(raw)
        assert (exact is values) == (not any(respelled)), raw
        fast += exact is values
    assert 300 < fast < 2700  # both paths were exercised


@pytest.mark.parametrize("raw", [
    b'{"a": 1.50, "b": NaN}', b'{"a": 1.50, "b": Infinity}', b'{"a": 1.50, "b": -Infinity}',
    b'{"a": 1.50, "b": "\\ud800"}', b'{"a": 1.50, "b": 1E400}', b'{"a": 1.50,}', b'\xef\xbb\xbf{"a": 1.50}',
    b'{"a": 1.50, "b": "\xff"}', '{"a": 1.50}'.encode("utf-16"), b'{"a": 01.50}', b'{"a": 1.50} x',
])
def test_refuses_what_orjson_refuses(raw):
    with pytest.raises(orjson.JSONDecodeError):
        exact_json.parse(raw)


def test_duplicate_keys_keep_the_last_value_as_orjson_does():
    values, exact = exact_json.parse(b'{"a": 1.50, "b": 2, "a": 2.50}')
    assert values == {"a": 2.5, "b": 2}
    assert orjson.dumps(exact) == b'{"a":2.50,"b":2}'
