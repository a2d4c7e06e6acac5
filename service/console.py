"""The command line's progress line: one line at the bottom of a terminal, rewritten in place, with
everything else written to the same stream (log lines, problems) going above it."""

from __future__ import annotations

import math
import os
import time
from typing import TextIO

CLEAR_TO_END = "\x1b[K"
PLAIN_INTERVAL_SECONDS = 10.0  # off a terminal, a progress line this often at most
INTERRUPTED_EXIT = 130  # the exit code of a command stopped by Ctrl-C (128 + SIGINT), as shells report it


class StatusLine:
    """A text stream for logs and messages that keeps a progress line below them.

    On a terminal `show` rewrites the line in place (`\\r`, then the text, then clear to the end of the
    line); a write of other text clears it first and redraws it after the text's final newline, so a
    log line never lands inside it. Off a terminal there is no `\\r`: `show` prints a plain line at most
    every PLAIN_INTERVAL_SECONDS.
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._tty = stream.isatty()
        self._text = ""  # the progress line while one is shown
        self._drawn = False  # whether it is on the screen now (not cleared by a write in progress)
        self._last_plain = time.monotonic()  # the first plain line comes after an interval: short runs print none

    def isatty(self) -> bool:
        return self._tty

    def show(self, text: str) -> None:
        """Replace the progress line with `text` (cut to the terminal's width, so it never wraps)."""
        if not self._tty:
            self._show_plain(text)
            return
        columns = self._columns()
        self._text = text[:columns - 1] if columns else text
        self._stream.write(f"\r{self._text}{CLEAR_TO_END}")
        self._stream.flush()
        self._drawn = True

    def finish(self) -> None:
        """Leave the last progress line on the screen and move below it; later text starts a new line."""
        if self._text and self._drawn:
            self._stream.write("\n")
            self._stream.flush()
        self._text, self._drawn = "", False

    def write(self, text: str) -> int:
        if self._drawn:
            self._stream.write(f"\r{CLEAR_TO_END}")
            self._drawn = False
        self._stream.write(text)
        if self._text and text.endswith("\n"):
            self._stream.write(f"\r{self._text}{CLEAR_TO_END}")
            self._drawn = True
        return len(text)

    def flush(self) -> None:
        self._stream.flush()

    def _show_plain(self, text: str) -> None:
        now = time.monotonic()
        if now - self._last_plain >= PLAIN_INTERVAL_SECONDS:
            self._last_plain = now
            self._stream.write(" ".join(text.split()) + "\n")
            self._stream.flush()

    def _columns(self) -> int:
        try:
            return os.get_terminal_size(self._stream.fileno()).columns
        except (OSError, ValueError):
            return 0


def format_rate(per_second: float) -> str:
    """Whole resources per second, rounded down as the `X-Progress` header gives them."""
    return f"{math.floor(per_second):,}/s"


def format_duration(seconds: float) -> str:
    """h:mm:ss, rounded up (an estimate of time left never says 0 too early)."""
    minutes, secs = divmod(math.ceil(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02}:{secs:02}"
