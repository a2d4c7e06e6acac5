"""service.search is pure: no HTTP or database library is imported with it."""

from __future__ import annotations

import subprocess
import sys


def test_search_package_imports_no_io_libraries():
    code = ("import sys, service.search.registry, service.search.build_definitions; "
            "print(sorted(m for m in ('aiohttp', 'asyncpg') if m in sys.modules))")
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.strip() == "[]"
