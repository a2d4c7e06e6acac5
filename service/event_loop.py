"""The event loop every process of ours runs on, benchmarks included, so that they measure what is deployed."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

_Result = TypeVar("_Result")


def run(main_coroutine: Coroutine[Any, Any, _Result]) -> _Result:
    """Run on uvloop where it is installed (not on Windows), else on the standard loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main_coroutine)
    return uvloop.run(main_coroutine)
