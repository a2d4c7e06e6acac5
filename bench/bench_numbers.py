"""What keeping numbers as written costs a write: parse, stamp and serialise, per resource, in CPU time.

Usage: `.venv/bin/python bench/bench_numbers.py [--repeat N]`. Data: the NDJSON lines of ../shared/data
(override with FHIR_BENCH_DATA_DIR). Per variant of the lines, the write path (`parse_resource`, then
`Submitted.stamped`) against the baseline of `orjson.loads`, stamp and `orjson.dumps` (what writes did
when they respelled numbers):
- as is: orjson's own text, which it writes back as it is;
- spaced: a space after every `":`, so every line gets the scan of its number tokens (and passes it:
  orjson writes every number of the shared data back as written);
- respelled: one member `"x":1.50` added, so every line takes the standard library's parse that keeps
  the numbers' text.
"""

from __future__ import annotations

import argparse
import gc
import sys
from datetime import UTC, datetime
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_extract import DATA_DIR, best_rate, lines_by_type  # noqa: E402
from service.fhir.resource import parse_body, parse_resource, stamp  # noqa: E402

NOW = datetime.now(UTC)


def orjson_only(lines: list[bytes]) -> None:
    for line in lines:
        orjson.dumps(stamp(parse_body(line), "id", 1, NOW))


def as_written(lines: list[bytes]) -> None:
    for line in lines:
        parse_resource(line).stamped("id", 1, NOW)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    repeat = parser.parse_args().repeat
    lines = [line for group in lines_by_type(DATA_DIR).values() for line in group]
    variants = {"as is": lines, "spaced": [line.replace(b'":', b'": ') for line in lines],
                "respelled": [line.rstrip()[:-1] + b',"x":1.50}' for line in lines]}
    gc.freeze()
    size = sum(map(len, lines)) / len(lines)
    print(f"{len(lines)} lines of {size:.0f} bytes on average; data: {DATA_DIR}")
    for name, variant in variants.items():
        baseline = 1e6 / best_rate(len(variant), lambda: orjson_only(variant), repeat)
        written = 1e6 / best_rate(len(variant), lambda: as_written(variant), repeat)
        print(f"{name:<10} orjson only {baseline:5.1f} us/resource   as written {written:5.1f} us/resource   "
              f"ratio {baseline / written:.2f}")


if __name__ == "__main__":
    main()
