"""What structural validation costs a write, per resource type, in CPU time.

Usage: `.venv/bin/python bench/bench_validation.py [--repeat N]`. Data: the NDJSON lines of tests/data
(override with FHIR_BENCH_DATA_DIR). Per type, in microseconds per resource: the write path's CPU work in
this process (`parse_resource` with its depth check, `check_resource`, stamp and serialise, index
extraction: no database), and the validation within it (`check_resource`), with its share. The share of a
REST create or a `load` is smaller, since they also wait for PostgreSQL (bench_rest.py measures those).
"""

from __future__ import annotations

import argparse
import gc
import sys
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_extract import DATA_DIR, best_rate, lines_by_type  # noqa: E402
from service.fhir.resource import check_resource, parse_resource  # noqa: E402
from service.search.registry import Registry  # noqa: E402

NOW = datetime.now(UTC)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    repeat = parser.parse_args().repeat
    registry = Registry.builtin()
    print(f"data: {DATA_DIR}")
    print(f"{'type':<26}{'count':>7}{'write us':>10}{'validate us':>13}{'share':>7}")
    totals = [0.0, 0.0, 0]

    def write(lines: list[bytes]) -> None:
        for line in lines:
            submitted = parse_resource(line)
            check_resource(submitted.values, submitted.values["resourceType"])
            registry.extract(submitted.stamped("id", 1, NOW)[0])

    for resource_type, lines in sorted(lines_by_type(DATA_DIR).items()):
        values = [parse_resource(line).values for line in lines]
        gc.freeze()  # the loaded data stays alive; a write's does not: keep GC off it
        written = 1e6 / best_rate(len(lines), lambda: write(lines), repeat)
        checked = 1e6 / best_rate(len(lines), lambda: [check_resource(v, resource_type) for v in values], repeat)
        print(f"{resource_type:<26}{len(lines):>7}{written:>10.1f}{checked:>13.1f}{checked / written:>7.0%}")
        totals = [totals[0] + written * len(lines), totals[1] + checked * len(lines), totals[2] + len(lines)]
    print(f"{'all':<26}{totals[2]:>7}{totals[0] / totals[2]:>10.1f}{totals[1] / totals[2]:>13.1f}"
          f"{totals[1] / totals[0]:>7.0%}")


if __name__ == "__main__":
    main()
