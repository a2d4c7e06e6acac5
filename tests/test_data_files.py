"""The shipped third-party test data is what tests/data/SHA256SUMS pins (see tests/data/README.md)."""

from __future__ import annotations

import hashlib
from pathlib import Path

SHIPPED = Path(__file__).resolve().parent / "data"


def test_every_data_file_matches_its_checksum():
    pinned = dict(reversed(line.split(maxsplit=1)) for line in (SHIPPED / "SHA256SUMS").read_text().splitlines())
    shipped = [path for path in SHIPPED.glob("*/*") if path.suffix in (".gz", ".json", ".txt")]
    present = {f"./{path.relative_to(SHIPPED)}" for path in shipped}
    assert present == set(pinned), "files and SHA256SUMS differ: regenerate it (tests/data/README.md)"
    for name, digest in pinned.items():
        assert hashlib.sha256((SHIPPED / name).read_bytes()).hexdigest() == digest, f"{name} changed"
