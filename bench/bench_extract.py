"""Extraction throughput per resource type, against parsing the same lines as a baseline.

Usage: `.venv/bin/python bench/bench_extract.py [--repeat N]`. Data: the gz NDJSON files under
tests/data (override with FHIR_BENCH_DATA_DIR). Prints resources/s of `orjson.loads` (baseline),
of extraction alone (all applicable R4 parameters), and of parse + extract, per resource type.
"""

from __future__ import annotations

import argparse
import gc
import gzip
import os
import time
from collections import defaultdict
from pathlib import Path

import orjson

from service.search.registry import Registry

DATA_DIR = Path(os.environ.get("FHIR_BENCH_DATA_DIR", Path(__file__).resolve().parents[1] / "tests" / "data"))


def lines_by_type(data_dir: Path) -> dict[str, list[bytes]]:
    lines: dict[str, list[bytes]] = defaultdict(list)
    for path in sorted(data_dir.glob("*/*.ndjson.gz")):
        with gzip.open(path) as file:
            lines[path.name.split(".")[0]].extend(line for line in file if line.strip())
    return lines


def best_rate(count: int, action, repeat: int) -> float:
    """Resources per second of the fastest of `repeat` runs (the least disturbed one), in CPU time
    of this process so other work on the machine disturbs it less."""
    best = min(timed(action) for _ in range(repeat))
    return count / best


def timed(action) -> float:
    start = time.process_time()
    action()
    return time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=5)
    repeat = parser.parse_args().repeat
    start = time.perf_counter()
    registry = Registry.builtin()
    print(f"registry built in {time.perf_counter() - start:.2f} s; data: {DATA_DIR}")
    print(f"{'type':<26}{'count':>7}{'rows/res':>9}{'parse/s':>10}{'extract/s':>11}{'ratio':>7}{'both/s':>9}")
    for resource_type, lines in sorted(lines_by_type(DATA_DIR).items()):
        resources = [orjson.loads(line) for line in lines]
        gc.freeze()  # the loaded data stays alive; a worker's batch does not: keep GC off it
        rows = sum(len(registry.extract(r).all_rows()) for r in resources) / len(resources)
        parse = best_rate(len(lines), lambda: [orjson.loads(line) for line in lines], repeat)
        extract = best_rate(len(lines), lambda: [registry.extract(r) for r in resources], repeat)
        both = best_rate(len(lines), lambda: [registry.extract(orjson.loads(line)) for line in lines], repeat)
        print(f"{resource_type:<26}{len(lines):>7}{rows:>9.1f}{parse:>10.0f}{extract:>11.0f}"
              f"{extract / parse:>7.2f}{both:>9.0f}")


if __name__ == "__main__":
    main()
