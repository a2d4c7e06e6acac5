"""The progress line of the command line: log lines go above it, never inside it."""

from __future__ import annotations

import io

from service.console import StatusLine, format_duration
from tests.terminal import screen_rows


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_line_goes_above_the_progress_line():
    terminal = Terminal()
    line = StatusLine(terminal)
    line.show("  in progress  10%")
    print("a log line", file=line, flush=True)  # print writes the text and the newline separately
    line.show("  in progress  20%")
    line.write("problem 1\nproblem 2\n")
    line.finish()
    line.write("after\n")
    assert screen_rows(terminal.getvalue()) == ["a log line", "problem 1", "problem 2", "  in progress  20%",
                                                "after", ""]


def test_off_a_terminal_there_is_no_carriage_return():
    stream = io.StringIO()
    line = StatusLine(stream)
    line.show("  queued  0%")  # within the first interval: nothing
    line.write("a log line\n")
    line.finish()
    assert stream.getvalue() == "a log line\n"


def test_time_left_is_rounded_up():
    assert [format_duration(seconds) for seconds in (0, 0.2, 59.5, 3600 * 2 + 61)] == [
        "0:00:00", "0:00:01", "0:01:00", "2:01:01"]
