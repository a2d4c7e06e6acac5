"""Start-up failures: what stops the process before it serves, reported as one line and an exit code.

The cause is always named (the setting, the address, the database host) and never printed with a
traceback: an operator reading a crash-looping pod's log needs the one line that says what to fix.
"""

from __future__ import annotations

import sys

import structlog

log = structlog.get_logger("service")


class StartupError(Exception):
    """The service cannot start; `str(error)` says why in one line."""

    exit_code = 1

    def __init__(self, event: str, message: str) -> None:
        super().__init__(message)
        self.event = event


class SettingsError(StartupError, ValueError):
    """Settings that cannot work, all of them at once (exit code 2, as for a usage error)."""

    exit_code = 2

    def __init__(self, problems: list[str]) -> None:
        super().__init__("settings_invalid", "; ".join(problems))
        self.problems = problems


def report(error: StartupError) -> int:
    """Log the failure as one structured event, say it plainly on a terminal, and give the exit code."""
    log.error(error.event, error=str(error), exit_code=error.exit_code)
    if sys.stderr.isatty():
        print(f"fhir-reindex-service: cannot start: {error}", file=sys.stderr)
    return error.exit_code
