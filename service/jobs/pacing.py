"""Sharing the event loop with requests while a job does CPU work."""

from __future__ import annotations

import asyncio
import time

# How long a job's CPU work runs before it lets the loop serve others. A request needs several turns of the loop
# (its request, its statement's reply, its response), and each turn waits for one slice of every running worker:
# with two workers and 2 ms slices /readyz waited 15 ms at the median during a rebuild, with 0.5 ms 10 ms, and
# the job was no slower.
SLICE_SECONDS = 0.0005


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
