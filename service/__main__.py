"""Command line: `serve` (the default), `migrate`, `load FILE_OR_DIR...`, `reindex`, `fulltext on|off|status`."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Coroutine, Sequence
from typing import Any, TextIO, cast

import structlog
from aiohttp import web

from service.app import create_app, create_runner
from service.collector import collect_rarely
from service.console import INTERRUPTED_EXIT, StatusLine
from service.db import open_database
from service.event_loop import run as run_loop
from service.http.keys import LIFECYCLE
from service.logging import configure_logging
from service.settings import Settings, load_settings
from service.startup import SettingsError, StartupError, report

log = structlog.get_logger("service")


async def serve(settings: Settings) -> None:
    """Run until SIGTERM/SIGINT; then report not-ready, drain, and stop within the grace period."""
    if settings.auth_mode == "unsigned":
        log.warning("auth_unsigned",
                    detail="unsigned (alg: none) bearer tokens are accepted; never use this in a deployment")
    app = create_app(settings)
    runner = create_runner(app, settings)
    try:
        await runner.setup()
        await _listen(runner, settings)
    except BaseException:
        await runner.cleanup()  # close what start-up opened (pool, embedded server) before it failed
        raise
    # A full collection then walks only young objects, instead of pausing the loop for tens of milliseconds
    # now and then during a reindex, and young ones run rarely.
    collect_rarely()
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
    load = commands.add_parser("load", help="bulk-load NDJSON and Bundle JSON files (plain or .gz) through COPY")
    load.add_argument("files", nargs="+", help="*.ndjson[.gz] or *.json[.gz] files, or directories of them")
    load.add_argument("--batch-size", type=int, default=5000, help="resources per write transaction")
    _add_verbose(load)
    reindex = commands.add_parser("reindex", help="start a $reindex job (as POST [base]/$reindex would)")
    reindex.add_argument("--url", action="append", default=[], help="Type? or Type?search; repeatable; none: all")
    reindex.add_argument("--batch-size", type=int, help="resources per write transaction (default 500)")
    reindex.add_argument("--optimize-storage", choices=("NONE", "CURRENT_VERSION", "ALL_VERSIONS"),
                         help="also rewrite stored bodies to canonical compact JSON (default NONE)")
    reindex.add_argument("--no-search-parameters", action="store_true",
                         help="leave index rows alone (reindexSearchParameters=NONE), e.g. a storage-only job")
    reindex.add_argument("--force", action="store_true",
                         help="compare every resource's index rows with a fresh extraction and rewrite those "
                              "that differ, and rewrite bodies even where already compact")
    reindex.add_argument("--verify", action="store_true",
                         help="compare every resource's index rows with a fresh extraction and report the "
                              "differences; writes nothing (with --wait, exit 1 when some differ)")
    reindex.add_argument("--rate", type=int, metavar="N",
                         help="throttle the job to N resources per second over all workers (0: unthrottled)")
    reindex.add_argument("--wait", action="store_true", help="work on the job here and wait until it ends")
    reindex.add_argument("--cancel-on-interrupt", action="store_true",
                         help="with --wait: Ctrl-C cancels the job (by default it goes on without this process)")
    controls = reindex.add_mutually_exclusive_group()
    controls.add_argument("--cancel", metavar="JOB_ID", help="cancel a job (as DELETE on its status URL would)")
    controls.add_argument("--pause", metavar="JOB_ID", help="pause a job; it keeps its progress")
    controls.add_argument("--resume", metavar="JOB_ID", help="resume a paused job")
    controls.add_argument("--throttle", nargs=2, metavar=("JOB_ID", "RATE"),
                          help="limit a job to RATE resources per second over all workers (0: unthrottled)")
    _add_verbose(reindex)
    fulltext = commands.add_parser("fulltext", help="switch full-text search (_text, _content) on or off for the "
                                   "whole database, or show whether it is on")
    fulltext.add_argument("action", choices=("on", "off", "status"))
    _add_verbose(fulltext)
    return parser


def _add_verbose(command: argparse.ArgumentParser) -> None:
    command.add_argument("--verbose", action="store_true",
                         help="log at FHIR_LOG_LEVEL (default: warnings and errors only)")


def _check_reindex(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.cancel_on_interrupt and not args.wait:
        parser.error("--cancel-on-interrupt needs --wait")
    starts_a_job = (args.url, args.batch_size, args.optimize_storage, args.no_search_parameters, args.force,
                    args.verify, args.wait, args.rate is not None)
    control = next((flag for flag in ("cancel", "pause", "resume", "throttle") if getattr(args, flag)), None)
    if control and any(starts_a_job):
        parser.error(f"--{control} JOB_ID takes no option of a new job")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "reindex":
        _check_reindex(parser, args)
    try:
        settings = load_settings()
    except SettingsError as exc:
        configure_logging(Settings.model_construct())  # the defaults: the failure still goes out as a log event
        return report(exc)
    try:
        return _command(args, settings)
    except StartupError as exc:
        return report(exc)


def _command(args: argparse.Namespace, settings: Settings) -> int:
    if args.command in ("load", "reindex", "fulltext"):
        return _operator_command(args, settings)
    configure_logging(settings)
    command = run_migrations if args.command == "migrate" else serve
    run_loop(command(settings))
    return 0


def _operator_command(args: argparse.Namespace, settings: Settings) -> int:
    """`load`, `reindex` and `fulltext`: logs go above the progress line, and only warnings unless --verbose; Ctrl-C
    ends the command without a traceback (`reindex --wait` handles it itself, to say what became of the job)."""
    status = StatusLine(sys.stderr)
    # A StatusLine is a text stream in all that logging uses of one (write, flush, isatty).
    configure_logging(settings, cast(TextIO, status), quiet=not args.verbose)
    try:
        return run_loop(_operator_coroutine(args, settings, status))
    except KeyboardInterrupt:
        status.finish()
        print("Interrupted; what was written before stays.", file=sys.stderr)
        return INTERRUPTED_EXIT


def _operator_coroutine(args: argparse.Namespace, settings: Settings, status: StatusLine) -> Coroutine[Any, Any, int]:
    if args.command == "load":
        from service.load import load_files

        return load_files(settings, args.files, args.batch_size, status)
    if args.command == "fulltext":
        from service.fulltext_cli import fulltext_command

        return fulltext_command(settings, args.action, status)
    from service.reindex_cli import Waiting, cancel_job, control_job, run_reindex

    if args.cancel:
        return cancel_job(settings, args.cancel)
    if args.pause or args.resume:
        return control_job(settings, args.pause or args.resume, "pause" if args.pause else "resume")
    if args.throttle:
        return control_job(settings, args.throttle[0], "throttle", args.throttle[1])
    options = {"batchSize": args.batch_size, "optimizeStorage": args.optimize_storage,
               "reindexSearchParameters": "NONE" if args.no_search_parameters else None,
               "force": args.force or None, "verify": args.verify or None, "throttle": args.rate}
    waiting = Waiting(status, args.cancel_on_interrupt) if args.wait else None
    return run_reindex(settings, args.url, options, waiting)


if __name__ == "__main__":
    sys.exit(main())
