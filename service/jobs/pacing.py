"""Sharing the event loop with requests while a job does CPU work."""

from __future__ import annotations

import asyncio
import time

# Probes and FHIR reads wait at most about this long behind a job's extraction.
SLICE_SECONDS = 0.002


class LoopSlices:
    """Call `await slices.pause()` between items of CPU work: it yields to the event loop once the
    current slice has run SLICE_SECONDS (cheaper than yielding every N items, and as fair)."""

    __slots__ = ("_deadline",)

    def __init__(self) -> None:
        self._deadline = time.perf_counter() + SLICE_SECONDS

    async def pause(self) -> None:
        if time.perf_counter() >= self._deadline:
            await asyncio.sleep(0)
            self._deadline = time.perf_counter() + SLICE_SECONDS
