"""Command line: `serve` (the default), `migrate`, `load FILE...`."""

from __future__ import annotations

import argparse
import asyncio
import gc
import signal
import sys
from collections.abc import Coroutine, Sequence
from typing import Any

import structlog
from aiohttp import web

from service.app import create_app, create_runner
from service.db import open_database
from service.http.keys import LIFECYCLE
from service.logging import configure_logging
from service.settings import Settings, load_settings
from service.startup import SettingsError, StartupError, report

log = structlog.get_logger("service")


async def serve(settings: Settings) -> None:
    """Run until SIGTERM/SIGINT; then report not-ready, drain, and stop within the grace period."""
    app = create_app(settings)
    runner = create_runner(app, settings)
    try:
        await runner.setup()
        await _listen(runner, settings)
    except BaseException:
        await runner.cleanup()  # close what start-up opened (pool, embedded server) before it failed
        raise
    # Move what start-up built (modules, the compiled search parameters) out of the garbage collector's
    # reach: a full collection then walks only young objects, instead of pausing the loop for tens of
    # milliseconds now and then during a reindex.
    gc.collect()
    gc.freeze()
    log.info("serving", host=settings.host, port=settings.port, base_path=settings.base_path or "/",
             auth_mode=settings.auth_mode, embedded_postgres=settings.embedded)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    # Readiness turns 503 first, so the mesh stops routing here before the listener closes.
    app[LIFECYCLE].draining = True
    log.info("draining", seconds=settings.shutdown_drain_seconds)
    await asyncio.sleep(settings.shutdown_drain_seconds)
    await runner.cleanup()
    log.info("stopped")


async def _listen(runner: web.AppRunner, settings: Settings) -> None:
    try:
        await web.TCPSite(runner, settings.host, settings.port).start()
    except OSError as exc:
        raise StartupError("listen_failed", f"cannot listen on {settings.host}:{settings.port}: "
                           f"{exc.strerror or exc} (FHIR_HOST, FHIR_PORT)") from None


async def run_migrations(settings: Settings) -> None:
    async with open_database(settings):  # starts the database and applies the migrations
        pass


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m service", description=__doc__)
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("serve", help="run the FHIR server (default)")
    commands.add_parser("migrate", help="apply the database migrations and exit")
    load = commands.add_parser("load", help="bulk-load NDJSON files (plain or .gz) through COPY")
    load.add_argument("files", nargs="+", help="NDJSON files or directories of *.ndjson[.gz]")
    load.add_argument("--batch-size", type=int, default=5000, help="resources per write transaction")
    reindex = commands.add_parser("reindex", help="start a $reindex job (as POST [base]/$reindex would)")
    reindex.add_argument("--url", action="append", default=[], help="Type? or Type?search; repeatable; none: all")
    reindex.add_argument("--batch-size", type=int, help="resources per write transaction (default 500)")
    reindex.add_argument("--optimize-storage", choices=("NONE", "CURRENT_VERSION", "ALL_VERSIONS"),
                         help="also rewrite stored bodies to canonical compact JSON (default NONE)")
    reindex.add_argument("--no-search-parameters", action="store_true",
                         help="leave index rows alone (reindexSearchParameters=NONE), e.g. a storage-only job")
    reindex.add_argument("--force", action="store_true",
                         help="re-extract every resource, and rewrite bodies even where already compact")
    reindex.add_argument("--wait", action="store_true", help="work on the job here and wait until it ends")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        configure_logging(Settings.model_construct())  # the defaults: the failure still goes out as a log event
        return report(exc)
    configure_logging(settings)
    try:
        return _command(args, settings)
    except StartupError as exc:
        return report(exc)


def _command(args: argparse.Namespace, settings: Settings) -> int:
    if settings.auth_mode == "unsigned":
        log.warning("auth_unsigned",
                    detail="unsigned (alg: none) bearer tokens are accepted; never use this in a deployment")
    if args.command == "load":
        from service.load import load_files

        return _run(load_files(settings, args.files, args.batch_size))
    if args.command == "reindex":
        from service.reindex_cli import run_reindex

        options = {"batchSize": args.batch_size, "optimizeStorage": args.optimize_storage,
                   "reindexSearchParameters": "NONE" if args.no_search_parameters else None,
                   "force": args.force or None}
        return _run(run_reindex(settings, args.url, options, args.wait))
    command = run_migrations if args.command == "migrate" else serve
    _run(command(settings))
    return 0


def _run(main_coroutine: Coroutine[Any, Any, Any]) -> Any:
    """Run on uvloop where it is installed (not on Windows), else on the standard loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main_coroutine)
    return uvloop.run(main_coroutine)


if __name__ == "__main__":
    sys.exit(main())
